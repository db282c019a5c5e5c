"""What every benchmark reports beside its figures: the machine, the code measured, and
whether other processes used the CPU while it measured."""
import os
import platform
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CpuMonitor:
    """CPU seconds used on the whole machine (from /proc/stat) against this process and its waited-for
    children (getrusage): the difference is what other processes took while we measured, so a contaminated
    measurement shows up in the output instead of passing silently."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource

        busy = steal = float("nan")
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            hz = os.sysconf("SC_CLK_TCK")
            busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / hz  # user nice system irq softirq
            steal = (v[7] if len(v) > 7 else 0) / hz
        except (OSError, ValueError, IndexError):
            pass
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            own += ru.ru_utime + ru.ru_stime
        return busy, steal, own, time.perf_counter()

    def stop(self):
        b0, s0, o0, t0 = self.start
        b1, s1, o1, t1 = self._sample()
        own = o1 - o0
        return dict(wall=t1 - t0, own_cpu=own, machine_cpu=b1 - b0, other_cpu=max(0.0, (b1 - b0) - own),
                    steal=s1 - s0, loadavg=os.getloadavg())


def code_state():
    """The commit measured and whether library files differed from it (benchmarks of a moving tree)."""
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "nsr", "basic_sr.py", "generate_traces.py")
    return dict(commit=git("rev-parse", "--short", "HEAD"),
                modified=[line.split(maxsplit=1)[1] for line in dirty.splitlines() if line.strip()])


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(nproc=os.cpu_count(), cpu=model or platform.processor(), platform=platform.platform(),
                python=platform.python_version())

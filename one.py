import sys, time, resource, shutil, os, pathlib
sys.path.insert(0, "/work/main")
from bootstrap.data import stage_data
arc = sys.argv[1]
for i in range(int(sys.argv[2]) if len(sys.argv)>2 else 3):
    d = pathlib.Path(f"/tmp/prof/out"); s = pathlib.Path("/tmp/prof/state")
    shutil.rmtree(d, ignore_errors=True); shutil.rmtree(s, ignore_errors=True)
    os.sync(); time.sleep(0.3)
    r0s = resource.getrusage(resource.RUSAGE_SELF); r0c = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter(); stage_data(pathlib.Path(arc), d, state_dir=s); w = time.perf_counter()-t
    r1s = resource.getrusage(resource.RUSAGE_SELF); r1c = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"wall {w:.3f} self u {r1s.ru_utime-r0s.ru_utime:.3f} s {r1s.ru_stime-r0s.ru_stime:.3f} child u {r1c.ru_utime-r0c.ru_utime:.3f} s {r1c.ru_stime-r0c.ru_stime:.3f}")

"""Memory per stalled connection (bench/RESULTS.md, "Hostile clients"): 200 clients that
send until neither side's buffers take more and never read.
  python3 bench/hostile/plainstall.py target/release/coop-echo BYTES_PER_WRITE
"""
import socket, subprocess, sys, time, os
BIN=sys.argv[1]; N=200; CH=int(sys.argv[2])
p=subprocess.Popen([BIN,'--host','127.0.0.1','--port','0','-q'],stderr=subprocess.PIPE,text=True)
line=p.stderr.readline(); port=int(line.split(':')[-1])
def rss(): return int([l for l in open(f'/proc/{p.pid}/status') if l.startswith('VmRSS')][0].split()[1])
def stall():
    s=socket.create_connection(('127.0.0.1',port)); s.setblocking(False); chunk=b'x'*CH; refused=0
    while refused<50:
        try: s.send(chunk); refused=0
        except BlockingIOError: refused+=1; time.sleep(0.001)
    return s
first=stall(); time.sleep(0.2); before=rss()
conns=[stall() for _ in range(N)]; time.sleep(0.5)
print(f"plain, {CH}-byte writes: {(rss()-before)/N:.1f} KiB per stalled connection")
p.terminate(); p.wait()

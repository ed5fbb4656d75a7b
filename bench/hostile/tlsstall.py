"""Memory per stalled connection (bench/RESULTS.md, "Hostile clients"): 200 clients that
send until neither side's buffers take more and never read.
  python3 bench/hostile/tlsstall.py target/release/coop-echo BYTES_PER_WRITE
Needs the certificate bench/hostile/probe.sh writes to /tmp/probe.
"""
import socket, ssl, subprocess, sys, time
BIN=sys.argv[1]; N=200; CH=int(sys.argv[2])
p=subprocess.Popen([BIN,'--host','127.0.0.1','--port','0','-q','--tls-cert','/tmp/probe/cert.pem','--tls-key','/tmp/probe/key.pem'],stderr=subprocess.PIPE,text=True)
line=p.stderr.readline(); port=int(line.split(':')[-1])
ctx=ssl.create_default_context(cafile='/tmp/probe/cert.pem')
def rss(): return int([l for l in open(f'/proc/{p.pid}/status') if l.startswith('VmRSS')][0].split()[1])
def stall():
    raw=socket.create_connection(('127.0.0.1',port)); s=ctx.wrap_socket(raw,server_hostname='localhost')
    s.setblocking(False); chunk=b'x'*CH; refused=0
    while refused<50:
        try: s.send(chunk); refused=0
        except (ssl.SSLWantWriteError, BlockingIOError): refused+=1; time.sleep(0.001)
    return s
first=stall(); time.sleep(0.2); before=rss()
conns=[stall() for _ in range(N)]; time.sleep(0.5)
print(f"TLS, {CH}-byte writes: {(rss()-before)/N:.1f} KiB per stalled connection")
p.terminate(); p.wait()

"""Mean and standard error of the Trouser logit (W·x + b, class 1 of models/fashion/classifier) over a samples.npy, without numpy.

    python3 tools/bench/trouser_reward.py OUT/samples.npy
"""
import struct, sys, ast, math
def load(p):
    d=open(p,'rb').read(); assert d[:6]==b'\x93NUMPY'
    major=d[6]; hl=struct.unpack('<H',d[8:10])[0] if major==1 else struct.unpack('<I',d[8:12])[0]
    off=10 if major==1 else 12; h=ast.literal_eval(d[off:off+hl].decode()); body=d[off+hl:]
    assert h['descr']=='<f4'; n=len(body)//4; return h['shape'], struct.unpack(f'<{n}f', body)
ws, W = load('models/fashion/classifier/W.npy'); bs, b = load('models/fashion/classifier/b.npy')
ss, X = load(sys.argv[1]); size=1
for s in ss[1:]: size*=s
k=1  # Trouser
if ws[0]==10: w=W[k*size:(k+1)*size]
else: w=W[k::ws[1]]
vals=[sum(a*c for a,c in zip(w, X[i*size:(i+1)*size]))+b[k] for i in range(ss[0])]
m=sum(vals)/len(vals); sd=math.sqrt(sum((v-m)**2 for v in vals)/(len(vals)-1))
print(f"{sys.argv[1]}: E[r] {m:.3f} ± {sd/math.sqrt(len(vals)):.3f} (n {len(vals)}, shapes W {ws})")

/* report_html.c - kiln bench's HTML report (a page of html.c's kit): the
 * run's summary table, latency CDFs (TTFT, ITL, e2e; one line per level),
 * throughput and TTFT over time, and for sweeps throughput and p99
 * latencies against the level. */
#include "bench/bench.h"

static const char body[] =
    "<h2>Summary</h2><div id=\"summary\"></div>\n"
    "<h2>Latency distributions</h2><div class=\"charts\" id=\"cdfs\"></div>\n"
    "<h2>Over time</h2><div class=\"charts\" id=\"time\"></div>\n"
    "<div id=\"sweep\"></div>\n";

static const char script[] =
    "var P=D.params||{},R=D.runs||[];\n"
    "function lvl(r){return (P.mode==='rate'?'rate ':'c=')+r.level;}\n"
    "var meta='Kiln '+esc(D.kiln_version||'?')+' &middot; '+esc(P.workload||'')+' &middot; '+"
    "esc(P.url||'')+' &middot; model '+esc(P.model||'-')+' &middot; started "
    "'+esc(D.started_at||'');\n"
    "meta+='<br>'+(P.mode==='rate'?'open loop (rate, '+(P.poisson?'Poisson':'constant')+')':"
    "'closed loop (concurrency)')+', '+(P.requests?P.requests+' requests':P.duration_s+' s')+"
    "' per level, warm-up '+P.warmup+', max_tokens '+P.max_tokens+(P.ignore_eos?' "
    "(ignore_eos)':'');\n"
    "if(P.slo&&(P.slo.ttft_ms||P.slo.tpot_ms||P.slo.e2e_ms))meta+=', SLO: '+"
    "(P.slo.ttft_ms?'ttft&le;'+P.slo.ttft_ms+'ms ':'')+(P.slo.tpot_ms?'tpot&le;'+P.slo.tpot_ms+'ms "
    "':'')+"
    "(P.slo.e2e_ms?'e2e&le;'+P.slo.e2e_ms+'ms':'');\n"
    "if(D.knee!==null&&D.knee!==undefined)meta+='<br><b>knee: '+esc(D.knee)+'</b>';\n"
    "document.getElementById('meta').innerHTML=meta;\n"
    "var t='<table><tr><th>level</th><th>ok</th><th>errors</th><th>req/s</th><th>out tok/s</th>"
    "<th>goodput</th><th>TTFT p50</th><th>TTFT p99</th><th>ITL p50</th><th>ITL p99</th>"
    "<th>TPOT p50</th><th>e2e p50</th><th>e2e p99</th><th>bench cpu</th></tr>';\n"
    "R.forEach(function(r){var s=r.summary,er=[];for(var k in s.errors)if(s.errors[k])"
    "er.push(k+' '+s.errors[k]);\n"
    " t+='<tr><td>'+esc(lvl(r))+'</td><td>'+s.ok+'</td><td>'+(er.length?esc(er.join(', ')):'0')+"
    "'</td><td>'+f(s.rps)+'</td><td>'+f(s.output_tps,1)+'</td><td>'+f(100*s.goodput_frac,1)+"
    "'%</td><td>'+f(s.ttft.p50)+'</td><td>'+f(s.ttft.p99)+'</td><td>'+f(s.itl.p50)+'</td><td>'+"
    "f(s.itl.p99)+'</td><td>'+f(s.tpot.p50)+'</td><td>'+f(s.e2e.p50)+'</td><td>'+f(s.e2e.p99)+"
    "'</td><td>'+f(s.cpu_pct,1)+'%</td></tr>';});\n"
    "document.getElementById('summary').innerHTML=t+'</table><div class=\"meta\">latencies in ms"
    ", counted from the scheduled send time</div>';\n"
    "var cd=document.getElementById('cdfs');\n"
    "[['ttft','Time to first token'],['itl','Inter-token latency'],['e2e','End-to-end latency']]"
    ".forEach(function(m){var ser=R.map(function(r){return {name:lvl(r),pts:((r.cdf||{})[m[0]]||[])"
    ".map(function(p){return [p[0],p[1]*100];})};});\n"
    " if(ser.some(function(s){return s.pts.length;}))chart(cd,m[1]+' (CDF)','ms',"
    "'% of requests'+(m[0]==='itl'?' (gaps)':''),ser,true);});\n"
    "var tm=document.getElementById('time');\n"
    "chart(tm,'Output tokens/s over time','s since start','tokens/s',R.map(function(r){return {"
    "name:lvl(r),pts:(r.timeline||[]).map(function(b){return [b.t+b.width,b.out_tps];})};}));\n"
    "chart(tm,'Completed requests/s over time','s since start','requests/s',R.map(function(r)"
    "{return {name:lvl(r),pts:(r.timeline||[]).map(function(b){return "
    "[b.t+b.width,b.rps];})};}));\n"
    "var tt=R.map(function(r){return {name:lvl(r),pts:(r.timeline||[]).filter(function(b)"
    "{return b.ttft_mean!==null;}).map(function(b){return [b.t+b.width,b.ttft_mean];})};});\n"
    "if(tt.some(function(s){return s.pts.length;}))"
    "chart(tm,'Mean TTFT over time','s since start','ms',tt);\n"
    "if(R.length>1){var sw=document.getElementById('sweep');sw.innerHTML='<h2>Sweep</h2>';\n"
    " var c=document.createElement('div');c.className='charts';sw.appendChild(c);\n"
    " chart(c,'Throughput by level',P.mode==='rate'?'requests/s offered':'concurrency',"
    "'output tok/s',[{name:'output tok/s',pts:R.map(function(r){return "
    "[r.level,r.summary.output_tps];})}]);\n"
    " chart(c,'p99 latency by level',P.mode==='rate'?'requests/s offered':'concurrency','ms',"
    "[{name:'TTFT p99',pts:R.map(function(r){return [r.level,r.summary.ttft.p99];})},"
    "{name:'e2e p99',pts:R.map(function(r){return [r.level,r.summary.e2e.p99];})}]);}\n";

kiln_status bench_write_html(const char *path, const json_t *doc) {
    return bench_html_write(path, "kiln bench report", body, doc, script);
}

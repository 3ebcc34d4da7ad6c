/* report_html.c - kiln bench's HTML report: one self-contained file (inline
 * CSS and JavaScript, no network) holding the run's JSON document and a
 * small script that draws SVG charts from it: latency CDFs (TTFT, ITL,
 * e2e; one line per level), throughput and TTFT over time, and for sweeps
 * throughput and p99 latencies against the level. When drawing finishes
 * the script writes "report rendered" into #status; a script error is
 * written into #errors (tests load the page in headless Chromium and look
 * for both). Invariant: the embedded JSON never contains "</" (written as
 * "<\/"), so it cannot close its script element. */
#include "bench/bench.h"
#include "base/status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char html_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>kiln bench report</title>\n<style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}\n"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}\n"
    ".meta{color:#555;margin-bottom:12px}\n"
    "table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;"
    "padding:4px 8px;text-align:right}th{background:#f0f0f0}td:first-child,th:first-child"
    "{text-align:left}\n"
    ".charts{display:flex;flex-wrap:wrap;gap:16px}.chart{background:#fff;border:1px solid #ddd;"
    "padding:8px}\n.chart svg text{font-size:11px;fill:#333}.chart .t{font-size:13px;"
    "font-weight:600}\n#errors{color:#b00;white-space:pre-wrap}#status{color:#999;"
    "font-size:11px}\n.legend span{display:inline-block;margin-right:12px}\n"
    "</style>\n<script>\nwindow.onerror=function(m,s,l,c,e){var d=document.getElementById("
    "'errors');if(d)d.textContent+='script error: '+m+' (line '+l+')\\n';};\n</script>\n"
    "</head><body>\n<h1>kiln bench report</h1>\n<div class=\"meta\" id=\"meta\"></div>\n"
    "<div id=\"errors\"></div>\n<h2>Summary</h2><div id=\"summary\"></div>\n"
    "<h2>Latency distributions</h2><div class=\"charts\" id=\"cdfs\"></div>\n"
    "<h2>Over time</h2><div class=\"charts\" id=\"time\"></div>\n"
    "<div id=\"sweep\"></div>\n<div id=\"status\"></div>\n"
    "<script id=\"data\" type=\"application/json\">";

static const char html_tail[] =
    "</script>\n<script>\n(function(){\n"
    "var D=JSON.parse(document.getElementById('data').textContent);\n"
    "var P=D.params||{},R=D.runs||[];\n"
    "var COL=['#1f77b4','#d62728','#2ca02c','#ff7f0e','#9467bd','#8c564b','#e377c2',"
    "'#7f7f7f','#bcbd22','#17becf'];\n"
    "function esc(s){return String(s).replace(/[&<>\"]/g,function(c){return {'&':'&amp;',"
    "'<':'&lt;','>':'&gt;','\"':'&quot;'}[c];});}\n"
    "function f(v,d){return "
    "(v===null||v===undefined||isNaN(v))?'-':Number(v).toFixed(d===undefined?2:d);}\n"
    "function lvl(r){return (P.mode==='rate'?'rate ':'c=')+r.level;}\n"
    "function nice(mx){if(!(mx>0))return 1;var p=Math.pow(10,Math.floor(Math.log10(mx)));"
    "var m=mx/p;return (m<=1?1:m<=2?2:m<=5?5:10)*p;}\n"
    /* chart(el, title, xlabel, ylabel, series[{name,pts:[[x,y]]}], step) */
    "function chart(el,title,xl,yl,series,step){\n"
    " var W=440,H=260,L=56,Rm=12,T=24,B=40,w=W-L-Rm,h=H-T-B,xmx=0,ymx=0,xmn=0;\n"
    " series.forEach(function(s){s.pts.forEach(function(p){if(p[0]>xmx)xmx=p[0];"
    "if(p[1]>ymx)ymx=p[1];});});\n"
    " var xlo=Infinity;series.forEach(function(s){s.pts.forEach(function(p){"
    "if(p[0]<xlo)xlo=p[0];});});\n"
    /* CDFs bunched far from 0 start the axis near the smallest value */
    " if(!(step&&xlo>0.3*xmx))xlo=0;var st=nice((xmx-xlo)/5);xmn=Math.floor(xlo/st)*st;"
    "xmx=Math.max(xmn+st,Math.ceil(xmx/st)*st);ymx=nice(ymx);\n"
    " function X(v){return L+(v-xmn)/(xmx-xmn)*w;}function Y(v){return T+h-v/ymx*h;}\n"
    " var s='<svg width=\"'+W+'\" height=\"'+H+'\" xmlns=\"http://www.w3.org/2000/svg\">';\n"
    " s+='<text class=\"t\" x=\"'+L+'\" y=\"16\">'+esc(title)+'</text>';\n"
    " for(var i=0;i<=5;i++){var yv=ymx*i/5;\n"
    "  s+='<line x1=\"'+L+'\" x2=\"'+(L+w)+'\" y1=\"'+Y(yv)+'\" y2=\"'+Y(yv)+'\" "
    "stroke=\"#eee\"/>';\n"
    "  s+='<text x=\"'+(L-4)+'\" y=\"'+(Y(yv)+4)+'\" "
    "text-anchor=\"end\">'+(+yv.toPrecision(3))+'</text>';}\n"
    " for(var xv=xmn;xv<=xmx+st/2;xv+=st)s+='<text x=\"'+X(xv)+'\" y=\"'+(T+h+14)+'\" "
    "text-anchor=\"middle\">'+(+xv.toPrecision(4))+'</text>';\n"
    " s+='<rect x=\"'+L+'\" y=\"'+T+'\" width=\"'+w+'\" height=\"'+h+'\" fill=\"none\" "
    "stroke=\"#999\"/>';\n"
    " s+='<text x=\"'+(L+w/2)+'\" y=\"'+(H-6)+'\" text-anchor=\"middle\">'+esc(xl)+'</text>';\n"
    " s+='<text transform=\"translate(12,'+(T+h/2)+') rotate(-90)\" "
    "text-anchor=\"middle\">'+esc(yl)+'</text>';\n"
    " series.forEach(function(se,k){if(!se.pts.length)return;var d='';\n"
    "  se.pts.forEach(function(p,j){var x=X(p[0]).toFixed(1),y=Y(p[1]).toFixed(1);\n"
    "   if(j===0)d+='M'+x+','+y;else if(step)d+='H'+x+'V'+y;else d+='L'+x+','+y;});\n"
    "  s+='<path d=\"'+d+'\" fill=\"none\" stroke=\"'+COL[k%COL.length]+'\" "
    "stroke-width=\"1.6\"/>';\n"
    "  if(se.pts.length<40)se.pts.forEach(function(p){s+='<circle cx=\"'+X(p[0])+'\" "
    "cy=\"'+Y(p[1])+"
    "'\" r=\"2.2\" fill=\"'+COL[k%COL.length]+'\"/>';});});\n"
    " s+='</svg><div class=\"legend\">';\n"
    " series.forEach(function(se,k){s+='<span style=\"color:'+COL[k%COL.length]+'\">&#9632; '+"
    "esc(se.name)+'</span>';});\n"
    " var div=document.createElement('div');div.className='chart';div.innerHTML=s+'</div>';"
    "el.appendChild(div);}\n"
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
    "{name:'e2e p99',pts:R.map(function(r){return [r.level,r.summary.e2e.p99];})}]);}\n"
    "document.getElementById('status').textContent='report rendered';\n"
    "})();\n</script>\n</body></html>\n";

kiln_status bench_write_html(const char *path, const json_t *doc) {
    char *js = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(8));
    if (!js) return kiln_fail(KILN_ERR_NOMEM, "bench: cannot serialise the report");
    FILE *f = fopen(path, "w");
    if (!f) {
        free(js);
        return kiln_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    }
    fputs(html_head, f);
    for (const char *p = js; *p; p++) {
        if (p[0] == '<' && p[1] == '/')
            fputs("<\\", f);
        else
            fputc(*p, f);
    }
    fputs(html_tail, f);
    free(js);
    if (fclose(f)) return kiln_fail(KILN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return KILN_OK;
}

/* trace_html.c - kiln trace compare's HTML report (a page of html.c's kit):
 * the verdict line, the per-span table of B against A (means, the change,
 * the bootstrap interval of B-A and whether it clears the run-to-run
 * spread: significant rows carry class "sig"), the step-time
 * distributions of both sides (a CDF chart and their quantiles) and each
 * trace's own step statistics, which show the spread between runs. The
 * document is the one src/cli/trace.c builds (see bench.h). */
#include "bench/bench.h"

static const char body[] = "<div id=\"verdict\"></div>\n"
                           "<h2>Spans, B against A</h2><div id=\"spans\"></div>\n"
                           "<h2>Step time</h2><div class=\"charts\" id=\"steps\"></div>"
                           "<div id=\"stepstats\" style=\"margin-top:12px\"></div>\n"
                           "<h2>Traces</h2><div id=\"traces\"></div>\n";

static const char script[] =
    "var S=D.spans||[],ST=D.steps||{},TR=D.traces||[];\n"
    "function files(a){return (a||[]).map(esc).join(', ');}\n"
    "function sg(v){return (v>0?'+':'')+f(v,4);}\n"
    "var meta='Kiln '+esc(D.kiln_version||'?')+' &middot; A: '+files(D.a)+' &middot; B: '+"
    "files(D.b)+'<br>95% bootstrap interval of B-A ('+esc(D.reps)+' resamples: traces, then "
    "spans), min change '+f(D.min_change_pct,1)+'%';\n"
    "if(D.note)meta+='<br>'+esc(D.note);\n"
    "document.getElementById('meta').innerHTML=meta;\n"
    "var n=D.n_significant||0;\n"
    "document.getElementById('verdict').innerHTML=n?'<b class=\"sig\">'+n+' significant "
    "difference'+(n===1?'':'s')+' (B vs A)</b>':'<b class=\"quiet\">no significant "
    "difference</b>';\n"
    "var t='<table><tr><th>span</th><th>n A</th><th>n B</th><th>A mean ms</th><th>B mean "
    "ms</th><th>change</th><th>95% interval B-A (ms)</th><th>verdict</th></tr>';\n"
    "S.forEach(function(r){var v;\n"
    " if(r.significant)v='<td class=\"sig'+(r.verdict==='faster'?' faster':'')+'\">'+"
    "esc(r.verdict.toUpperCase())+'</td>';\n"
    " else v='<td class=\"quiet\">'+(r.a_mean_ms===null?esc(r.verdict):'~ within "
    "noise')+'</td>';\n"
    " t+='<tr data-span=\"'+esc(r.name)+'\"><td>'+esc(r.name)+'</td><td>'+r.n_a+'</td><td>'+"
    "r.n_b+'</td><td>'+f(r.a_mean_ms,4)+'</td><td>'+f(r.b_mean_ms,4)+'</td><td>'+"
    "(r.change_pct===null?'-':(r.change_pct>0?'+':'')+f(r.change_pct,1)+'%')+'</td><td>'+"
    "(r.lo_ms===null?'-':'['+sg(r.lo_ms)+', '+sg(r.hi_ms)+']')+'</td>'+v+'</tr>';});\n"
    "document.getElementById('spans').innerHTML=t+'</table>';\n"
    "var sides=[['a','A'],['b','B']].filter(function(s){return ST[s[0]];});\n"
    "if(sides.length){\n"
    " chart(document.getElementById('steps'),'Step time (CDF)','ms','% of steps',"
    "sides.map(function(s){return {name:s[1]+' ('+ST[s[0]].count+' steps)',"
    "pts:(ST[s[0]].cdf||[]).map(function(p){return [p[0],p[1]*100];})};}),true);\n"
    " var q='<table><tr><th>side</th><th>steps</th><th>min</th><th>p10</th><th>p50</th>"
    "<th>p90</th><th>p99</th><th>max</th><th>mean</th></tr>';\n"
    " sides.forEach(function(s){var x=ST[s[0]];q+='<tr><td>'+s[1]+'</td><td>'+x.count+"
    "'</td><td>'+f(x.min,4)+'</td><td>'+f(x.p10,4)+'</td><td>'+f(x.p50,4)+'</td><td>'+"
    "f(x.p90,4)+'</td><td>'+f(x.p99,4)+'</td><td>'+f(x.max,4)+'</td><td>'+f(x.mean,4)+"
    "'</td></tr>';});\n"
    " document.getElementById('stepstats').innerHTML=q+'</table><div class=\"meta\">"
    "milliseconds, spans named step</div>';\n"
    "}else document.getElementById('stepstats').innerHTML='<div class=\"quiet\">no spans named "
    "step</div>';\n"
    "var r='<table><tr><th>trace</th><th>side</th><th>steps</th><th>step mean ms</th>"
    "<th>step p50 ms</th><th>step p99 ms</th></tr>';\n"
    "TR.forEach(function(x){r+='<tr><td>'+esc(x.file)+'</td><td>'+esc(x.side)+'</td><td>'+"
    "x.steps+'</td><td>'+f(x.step_mean_ms,4)+'</td><td>'+f(x.step_p50_ms,4)+'</td><td>'+"
    "f(x.step_p99_ms,4)+'</td></tr>';});\n"
    "document.getElementById('traces').innerHTML=r+'</table>';\n";

kiln_status bench_write_trace_html(const char *path, const json_t *doc) {
    return bench_html_write(path, "kiln trace compare", body, doc, script);
}

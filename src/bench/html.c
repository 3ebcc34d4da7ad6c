/* html.c - the page kit of Kiln's HTML reports (kiln bench --html, kiln trace
 * compare --html): one self-contained file - inline CSS and JavaScript, no
 * network - holding the report's JSON document and the page's script, which
 * draws tables and SVG charts from it with the shared helpers below. When
 * the script finishes it writes "report rendered" into #status; a script
 * error is written into #errors (the tests load pages in headless Chromium
 * and look for both). Invariant: the embedded JSON never contains "</"
 * (written as "<\/"), so it cannot close its script element. */
#include "base/status.h"
#include "bench/bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char css[] =
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
    ".sig{color:#b00;font-weight:600}.faster{color:#070;font-weight:600}"
    ".quiet{color:#888}\n";

/* esc (HTML text), f (a number with d decimals, '-' when missing), nice (a
 * round axis maximum), chart (an SVG line chart) and its colours. */
static const char helpers[] =
    "var COL=['#1f77b4','#d62728','#2ca02c','#ff7f0e','#9467bd','#8c564b','#e377c2',"
    "'#7f7f7f','#bcbd22','#17becf'];\n"
    "function esc(s){return String(s).replace(/[&<>\"]/g,function(c){return {'&':'&amp;',"
    "'<':'&lt;','>':'&gt;','\"':'&quot;'}[c];});}\n"
    "function f(v,d){return "
    "(v===null||v===undefined||isNaN(v))?'-':Number(v).toFixed(d===undefined?2:d);}\n"
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
    "el.appendChild(div);}\n";

kiln_status bench_html_write(const char *path, const char *title, const char *body,
                             const json_t *doc, const char *script) {
    char *js = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(8));
    if (!js) return kiln_fail(KILN_ERR_NOMEM, "%s: cannot serialise the report", path);
    FILE *f = fopen(path, "w");
    if (!f) {
        free(js);
        return kiln_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    }
    fprintf(f,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<title>%s</title>\n<style>\n%s</style>\n<script>\n"
            "window.onerror=function(m,s,l,c,e){var d=document.getElementById('errors');"
            "if(d)d.textContent+='script error: '+m+' (line '+l+')\\n';};\n</script>\n"
            "</head><body>\n<h1>%s</h1>\n<div class=\"meta\" id=\"meta\"></div>\n"
            "<div id=\"errors\"></div>\n%s<div id=\"status\"></div>\n"
            "<script id=\"data\" type=\"application/json\">",
            title, css, title, body);
    for (const char *p = js; *p; p++) {
        if (p[0] == '<' && p[1] == '/')
            fputs("<\\", f);
        else
            fputc(*p, f);
    }
    fprintf(f,
            "</script>\n<script>\n(function(){\n"
            "var D=JSON.parse(document.getElementById('data').textContent);\n%s%s"
            "document.getElementById('status').textContent='report rendered';\n"
            "})();\n</script>\n</body></html>\n",
            helpers, script);
    free(js);
    if (fclose(f)) return kiln_fail(KILN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return KILN_OK;
}

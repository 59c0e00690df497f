"""The HTML page around report.html and compare.html: its style, and a script that
checks every chart drew (the report's browser test reads what it finds). Inline, with
no script library, so a page opens offline and shows no code from elsewhere."""

CHECK = """
window.reportErrors = [];
window.addEventListener('error', e => window.reportErrors.push(String(e.message)));
window.addEventListener('load', () => {
  const figures = [...document.querySelectorAll('figure.chart')];
  let drawn = 0;
  for (const f of figures) {
    const marks = [...f.querySelectorAll('svg .mark')];
    const ok = marks.some(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
    f.dataset.drawn = ok ? 'yes' : 'no';
    if (ok) drawn++;
  }
  const status = document.getElementById('report-status');
  status.dataset.charts = figures.length;
  status.dataset.drawn = drawn;
  status.dataset.errors = window.reportErrors.length;
  status.textContent = drawn + ' of ' + figures.length + ' charts drawn';
});
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 980px;
       padding: 24px; color: #1d1d1f; background: #fafafa; }}
header h1 {{ margin: 0 0 12px; }}
.facts {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.fact {{ background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; padding: 8px 12px; }}
.fact b {{ display: block; font-size: 11px; text-transform: uppercase; color: #777; }}
section {{ background: #fff; border: 1px solid #e3e3e3; border-radius: 10px; padding: 16px 20px; margin: 16px 0; }}
h2 {{ margin: 0 0 4px; font-size: 19px; }} h3 small, summary small {{ color: #777; font-weight: normal; margin-left: 8px; }}
.note {{ color: #555; margin: 0 0 8px; }}
figure {{ margin: 8px 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
td, th {{ border-top: 1px solid #eee; padding: 6px; text-align: left; vertical-align: top; }}
.num {{ text-align: right; }} .quote {{ color: #666; font-style: italic; margin-top: 2px; }}
details {{ border-top: 1px solid #eee; padding: 6px 0; }} summary {{ cursor: pointer; }}
.msg {{ margin: 6px 0 6px 12px; }} .msg p {{ white-space: pre-wrap; margin: 2px 0; }}
.msg.user b {{ color: #2f6fdf; }} .msg.assistant b {{ color: #3a9d5d; }} .msg.system b {{ color: #777; }}
footer {{ color: #888; font-size: 12px; }}
</style></head>
<body>
{body}
<footer>Made by factory. <span id="report-status">charts not checked (scripts off)</span></footer>
<script>{check}</script>
</body></html>
"""


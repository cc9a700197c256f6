"""The report page's stylesheet, inlined in the page's head by `cohort.report.html` (the
page needs no other file to look right)."""

CSS = """
:root { --ink:#222; --muted:#666; --line:#e3e6ea; --accent:#1d3f6e; --bg:#f7f8fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { margin: 0 0 4px; font-size: 27px; color: var(--accent); }
.sub { margin: 0 0 18px; color: var(--muted); font-size: 13.5px; }
.synthetic { display:flex; gap:18px; align-items:center; margin: 0 0 20px; padding: 14px 20px;
  color:#fff; border-radius:8px; font-size:15px;
  background: repeating-linear-gradient(135deg, #b8293d 0 22px, #a32134 22px 44px); }
.synthetic strong { font-size: 26px; letter-spacing: 3px; }
.cards { display:grid; grid-template-columns: repeat(6, 1fr); gap: 12px; margin-bottom: 16px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { font-size:12.5px; color:var(--muted); text-transform:uppercase; letter-spacing:.4px; }
.card .v { font-size:28px; font-weight:700; color:var(--accent); line-height:1.25; }
.card .s, .s { font-size:12.5px; color:var(--muted); }
nav { position: sticky; top: 0; z-index: 2; background: var(--bg); padding: 8px 0;
  border-bottom: 1px solid var(--line); margin-bottom: 8px; }
nav a { color: var(--accent); text-decoration:none; margin-right: 16px; font-size: 14px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding: 18px 22px;
  margin: 18px 0; }
h2 { margin: 0 0 6px; font-size: 21px; color: var(--accent); }
h3 { margin: 18px 0 6px; font-size: 16px; }
.lead { margin: 0 0 10px; }
.note { background:#fff7e6; border-left: 4px solid #e0a030; padding: 6px 12px; margin: 8px 0;
  font-size: 14px; }
figure { margin: 10px 0 12px; }
figure img { width: 100%; height: auto; display:block; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 6px 0 4px; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.small { font-size: 12.5px; }
table.small code { font-size: 11.5px; word-break: break-all; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px;
  background: #f1f3f5; padding: 0 3px; border-radius: 3px; }
code.hash { font-size: 11px; word-break: break-all; }
.muted { color: var(--muted); }
.gallery { display:grid; grid-template-columns: 1fr; gap: 16px; }
.qc { border:1px solid var(--line); border-radius:8px; overflow:hidden; background:#fafafa; }
.qc img { width:100%; display:block; background:#000; }
.qc .meta { padding: 8px 10px; font-size: 13px; }
.qc .meta code { word-break: break-all; font-size: 11.5px; }
.chip { display:inline-block; background:#fde8e0; color:#8a2b0e; border-radius: 10px;
  padding: 0 8px; margin: 4px 4px 0 0; font-size: 12px; }
.missing { padding: 40px; text-align:center; color: var(--muted); }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
pre { background:#f6f8fa; padding: 10px; font-size: 12px; overflow:auto; max-height: 420px; }
footer { color: var(--muted); font-size: 13px; margin-top: 24px; }
@media (max-width: 900px) { .cards { grid-template-columns: repeat(2, 1fr); }
}
"""

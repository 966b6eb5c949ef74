// The widget's stylesheet, adopted inside its shadow root (see ui.js). Only px units: `rem` would
// follow the embedding page's root font size. `:host` rules are !important because they are the
// one place page CSS can still reach (the host element lives in the light DOM), and for important
// declarations the shadow tree's own rules win over the page's.

const UI_CSS = `
:host { all: initial !important; display: block !important; position: fixed !important;
  right: 16px !important; bottom: 16px !important; left: auto !important; top: auto !important;
  width: auto !important; height: auto !important; margin: 0 !important; padding: 0 !important;
  border: 0 !important; transform: none !important; filter: none !important; clip-path: none !important;
  z-index: 2147483000 !important; visibility: visible !important; opacity: 1 !important;
  pointer-events: auto !important; contain: layout style !important;
  font: 14px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif !important; }
.kz { --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --accent: #1f6feb; --accent-fg: #ffffff; --danger: #cf222e; --ok: #1a7f37; --warn: #9a6700;
  --tile: #e9edf1; --speak: #2da44e; --shadow: 0 12px 32px rgba(20,30,40,.22);
  color-scheme: light; color: var(--fg); display: flex; flex-direction: column; align-items: flex-end;
  gap: 12px; box-sizing: border-box; -webkit-font-smoothing: antialiased; }
@media (prefers-color-scheme: dark) {
  .kz { --bg: #161b22; --fg: #e6edf3; --muted: #9198a1; --line: #30363d; --soft: #21262d;
    --accent: #388bfd; --danger: #f85149; --ok: #3fb950; --warn: #d29922; --tile: #262c36;
    --speak: #3fb950; --shadow: 0 12px 32px rgba(0,0,0,.55); color-scheme: dark; }
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
button, input, textarea { font: inherit; color: inherit; }
button { cursor: pointer; }
button:disabled { cursor: default; opacity: .5; }
:focus-visible { outline: 3px solid #9cc3ff; outline-offset: 2px; }

.launcher { all: unset; box-sizing: border-box; width: 56px; height: 56px; border-radius: 50%;
  display: grid; place-items: center; cursor: pointer; color: #fff; background: #1f6feb;
  box-shadow: 0 4px 14px rgba(0,0,0,.25); position: relative; flex: none; }
.launcher:focus-visible { outline: 3px solid #9cc3ff; outline-offset: 2px; }
.launcher .dot { position: absolute; right: 4px; top: 4px; width: 10px; height: 10px; border-radius: 50%;
  background: #d29922; border: 2px solid #fff; }
.launcher[data-state="ready"] .dot, .launcher[data-state="call"] .dot { background: #2ea043; }
.launcher[data-state="error"] .dot { background: #da3633; }
.launcher[data-open="true"] { background: #0b4fb3; }
.launcher .badge { position: absolute; left: -2px; bottom: -2px; min-width: 20px; height: 20px; padding: 0 5px;
  border-radius: 10px; background: #2ea043; color: #fff; font-size: 12px; line-height: 20px; text-align: center;
  border: 2px solid #fff; }

.panel { width: min(380px, calc(100vw - 32px)); max-height: calc(100vh - 104px); overflow: auto;
  display: flex; flex-direction: column; gap: 10px; padding: 12px; border-radius: 14px;
  background: var(--bg); color: var(--fg); border: 1px solid var(--line); box-shadow: var(--shadow); }
header { display: flex; align-items: center; gap: 8px; min-height: 32px; }
.title { font-size: 15px; font-weight: 650; }
.count { color: var(--muted); font-size: 13px; }
.spacer { flex: 1; }
.ghost { display: inline-flex; align-items: center; gap: 5px; height: 32px; padding: 0 10px; border-radius: 8px;
  border: 1px solid var(--line); background: var(--soft); color: var(--fg); font-size: 13px; }
.ghost.icon-only { width: 32px; padding: 0; justify-content: center; }
.ghost:hover:not(:disabled) { border-color: var(--muted); }

.status { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; padding: 8px 10px;
  border-radius: 8px; background: var(--soft); font-size: 13px; border-left: 3px solid var(--accent); }
.status[data-kind="error"] { border-left-color: var(--danger); }
.status[data-kind="busy"] { border-left-color: var(--warn); }
.status-text { flex: 1 1 200px; }
.bar { flex: 1 1 100%; height: 4px; border-radius: 2px; background: var(--line); overflow: hidden; }
.bar .fill { display: block; height: 100%; width: 0; background: var(--accent); transition: width .2s; }
.bar[data-indeterminate="true"] .fill { width: 30%; animation: kz-slide 1.2s ease-in-out infinite; }
@keyframes kz-slide { from { transform: translateX(-100%); } to { transform: translateX(340%); } }
@media (prefers-reduced-motion: reduce) { .bar .fill { animation: none !important; transition: none; } }
.linkish { border: 0; background: none; padding: 0; color: var(--accent); text-decoration: underline; font-size: 13px; }

.tiles { display: grid; gap: 6px; grid-template-columns: 1fr; }
.tiles[data-n="2"], .tiles[data-n="3"], .tiles[data-n="4"] { grid-template-columns: 1fr 1fr; }
.tile { position: relative; aspect-ratio: 4 / 3; border-radius: 10px; overflow: hidden;
  background: var(--tile); display: grid; place-items: center; outline: 3px solid transparent;
  outline-offset: -3px; transition: outline-color .15s; }
.tiles[data-n="1"] .tile { aspect-ratio: 16 / 9; }
.tile[data-speaking="true"] { outline-color: var(--speak); }
.tile video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: cover; background: #000; }
.tile[data-self="true"] video { transform: scaleX(-1); }
.tile audio { display: none; }
.avatar { width: 56px; height: 56px; border-radius: 50%; display: grid; place-items: center;
  font-size: 20px; font-weight: 650; color: #fff; background: hsl(var(--hue, 210) 45% 45%); user-select: none; }
.tname { position: absolute; left: 6px; bottom: 6px; max-width: calc(100% - 36px); padding: 2px 7px;
  border-radius: 6px; background: rgba(0,0,0,.55); color: #fff; font-size: 12px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.muted-icon { position: absolute; right: 6px; bottom: 6px; width: 22px; height: 22px; border-radius: 50%;
  display: grid; place-items: center; background: rgba(0,0,0,.55); color: #fff; }

.name-row { display: flex; align-items: center; gap: 8px; font-size: 13px; color: var(--muted); }
.name-input { flex: 1; min-width: 0; height: 32px; padding: 0 10px; border-radius: 8px;
  border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
.controls { display: flex; gap: 8px; align-items: center; justify-content: center; flex-wrap: wrap; }
.ctl { width: 44px; height: 44px; border-radius: 50%; border: 1px solid var(--line); background: var(--soft);
  color: var(--fg); display: grid; place-items: center; padding: 0; }
.ctl[aria-pressed="true"] { background: var(--accent); border-color: var(--accent); color: var(--accent-fg); }
.ctl.danger { background: var(--danger); border-color: var(--danger); color: #fff; }
.primary { height: 44px; padding: 0 22px; border-radius: 22px; border: 0; background: var(--accent);
  color: var(--accent-fg); font-weight: 600; }

.chat { display: flex; flex-direction: column; gap: 6px; border-top: 1px solid var(--line); padding-top: 10px; }
.log { list-style: none; margin: 0; padding: 0; max-height: 180px; overflow-y: auto; display: flex;
  flex-direction: column; gap: 6px; }
.log li { padding: 6px 9px; border-radius: 10px; background: var(--soft); max-width: 88%; align-self: flex-start; }
.log li.mine { align-self: flex-end; background: color-mix(in srgb, var(--accent) 16%, var(--bg)); }
.who { font-weight: 600; font-size: 12px; }
.when { color: var(--muted); font-size: 11px; margin-left: 6px; }
.text { margin: 2px 0 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.chat-form { display: flex; gap: 6px; align-items: flex-end; }
.chat-input { flex: 1; min-width: 0; min-height: 38px; max-height: 96px; resize: none; padding: 8px 10px;
  border-radius: 10px; border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
.chat-input[aria-invalid="true"] { border-color: var(--danger); }
.ctl.send { width: 38px; height: 38px; }
.hint { margin: 0; font-size: 12px; color: var(--muted); min-height: 0; }
.hint:empty { display: none; }
.hint[data-kind="error"] { color: var(--danger); }
.offscreen { position: fixed; left: -9999px; top: 0; }

.door { display: flex; flex-direction: column; gap: 6px; }
.code-form { display: flex; gap: 6px; align-items: center; }
.code-input { flex: 1; min-width: 0; height: 36px; padding: 0 10px; border-radius: 8px;
  border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
.code-form .primary { height: 36px; padding: 0 14px; }
.claim-toggle { align-self: flex-start; }
.host-tools, .consent { display: flex; flex-direction: column; gap: 8px; border-top: 1px solid var(--line);
  padding-top: 10px; }
.host-tools h3, .consent h3 { margin: 0; font-size: 13px; font-weight: 650; color: var(--muted); }
.switches { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; }
.switch { display: inline-flex; gap: 6px; align-items: center; font-size: 13px; }
.queue, .agents, .audit { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 6px; }
.knock { display: flex; gap: 6px; align-items: center; }
.kname { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.queue .empty { color: var(--muted); font-size: 12px; }
.small { height: 28px; padding: 0 10px; border-radius: 14px; font-size: 12px; }
.danger.small { border: 0; background: var(--danger); color: #fff; }
.agent { display: flex; flex-direction: column; gap: 4px; padding: 8px; border-radius: 8px; background: var(--soft); }
.agent-head { display: flex; flex-wrap: wrap; gap: 4px 8px; align-items: baseline; }
.disclosure { font-size: 12px; color: var(--muted); }
.disclosure.warn { color: var(--warn); }
.caps { display: flex; flex-wrap: wrap; gap: 2px 10px; }
.cap { display: inline-flex; gap: 4px; align-items: center; font-size: 12px; }
.audit li { font-size: 11px; color: var(--muted); }
.badges { position: absolute; left: 6px; top: 6px; display: flex; gap: 4px; }
.tag { padding: 1px 6px; border-radius: 6px; font-size: 11px; font-weight: 600; color: #fff; background: rgba(0,0,0,.6); }
.tag.host { background: var(--accent); }
.tag.agent { background: #8250df; }
.tile-tools { position: absolute; right: 6px; top: 6px; display: flex; gap: 4px; align-items: center;
  flex-wrap: wrap; justify-content: flex-end; max-width: calc(100% - 12px); }
.verified { position: absolute; left: 6px; bottom: 30px; max-width: calc(100% - 12px); padding: 1px 6px;
  border-radius: 6px; background: #1a7f37; color: #fff; font-size: 11px; font-weight: 600;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.safety { position: absolute; right: 6px; bottom: 32px; padding: 1px 5px; border-radius: 6px;
  background: rgba(0,0,0,.55); font-size: 14px; letter-spacing: 2px; }
.signin { display: flex; flex-direction: column; gap: 6px; }
.kbz-signin-box { display: flex; flex-direction: column; gap: 6px; }
.kbz-signin-label { font-size: 13px; color: var(--muted); }
.kbz-signin input { flex: 1; min-width: 0; height: 36px; padding: 0 10px; border-radius: 8px;
  border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
.kbz-signin .primary { height: 36px; padding: 0 14px; }
.kbz-signin-hint { margin: 0; font-size: 12px; color: var(--muted); }
.kbz-signin-hint:empty { display: none; }
.kbz-signin-hint[data-kind="error"] { color: var(--danger); }
.kbz-signin-done { margin: 0; font-size: 13px; color: #1a7f37; }
.tile-tools .confirm { padding: 2px 6px; border-radius: 6px; background: rgba(0,0,0,.7); color: #fff; font-size: 11px; }
`;

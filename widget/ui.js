// The widget's DOM: a host element on document.body holding a *closed* shadow root, so the page's
// styles and scripts cannot reach in and ours cannot leak out. For now it draws only the corner
// launcher (the call panel is a later step); it is drawn synchronously at mount, before Python boots.
// Page CSS can still match the host element itself (it lives in the light DOM), hence the guards.

const MIC_SVG =
  '<svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true" fill="none" stroke="currentColor" ' +
  'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="9" y="3" width="6" height="11" rx="3"/>' +
  '<path d="M5 11a7 7 0 0 0 14 0"/><path d="M12 18v3"/></svg>';

const LAUNCHER_CSS = `
:host { all: initial !important; display: block !important; position: fixed !important;
  right: 20px !important; bottom: 20px !important; left: auto !important; top: auto !important;
  width: 56px !important; height: 56px !important; margin: 0 !important; padding: 0 !important;
  z-index: 2147483000 !important; visibility: visible !important; opacity: 1 !important;
  font: 14px/1.3 system-ui, sans-serif !important; }
button { all: unset; box-sizing: border-box; width: 56px; height: 56px; border-radius: 50%;
  display: grid; place-items: center; cursor: pointer; color: #fff; background: #1f6feb;
  box-shadow: 0 4px 14px rgba(0,0,0,.25); position: relative; }
button:focus-visible { outline: 3px solid #9cc3ff; outline-offset: 2px; }
.dot { position: absolute; right: 4px; top: 4px; width: 10px; height: 10px; border-radius: 50%;
  background: #d29922; border: 2px solid #fff; }
button[data-state="ready"] .dot { background: #2ea043; }
button[data-state="error"] .dot { background: #da3633; }
button[data-open="true"] { background: #0b4fb3; }
`;

function createLauncher(opts) {
  // A custom tag (no page selector like `div` matches it) and !important :host rules, which beat
  // even the page's !important ones on the host element.
  const host = document.createElement("kibitz-widget");
  host.setAttribute("data-kibitz-widget", "");
  const root = host.attachShadow({ mode: "closed" });
  const style = document.createElement("style");
  style.textContent = LAUNCHER_CSS;
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", "Kibitz call: loading");
  button.dataset.state = "loading";
  button.dataset.open = String(!!opts.startOpen);
  button.innerHTML = MIC_SVG + '<span class="dot"></span>';
  button.addEventListener("click", () => {
    button.dataset.open = String(button.dataset.open !== "true");
    if (opts.onToggle) opts.onToggle(button.dataset.open === "true");
  });
  root.append(style, button);

  let attached = false;
  const attach = () => {
    if (attached) return;
    attached = true;
    document.body.appendChild(host);
    if (opts.onShown) opts.onShown();
  };
  if (document.body) attach();
  else document.addEventListener("DOMContentLoaded", attach, { once: true });

  return {
    host,
    setState(state, label) {
      button.dataset.state = state;
      button.setAttribute("aria-label", label || `Kibitz call: ${state}`);
    },
    remove() {
      document.removeEventListener("DOMContentLoaded", attach);
      attached = true;
      host.remove();
    },
  };
}

// The widget's moderation views, drawn ONLY from the public controller (bundled before ui.js):
// - the door, as a guest sees it: a code prompt, an invalid or expired invite, waiting, denied,
//   locked, full, removed — each says what to do next (doorStatus + the code form);
// - the host's tools: the waiting queue (admit/deny), lobby and lock switches, reset, remove from a
//   tile (after a confirmation), and "I'm the host" for a link that carries the sealed host key;
// - the agent consent panel: each agent's disclosed backend and egress, its grant as toggles, and
//   its audit feed (anyone who may write grants: the host, or anyone in a room without one).
// Everything here a headless app can do with the same controller calls.

const GRANT_PERCEIVE = [
  ["read-chat", "Read chat"], ["read-roster", "See who is here"], ["receive-directed", "Receive direct messages"],
  ["hear-audio", "Hear audio"], ["see-screen", "See video and screen"],
];
const GRANT_ACT = [["send-chat", "Post chat"], ["speak", "Speak"], ["act", "Act in apps"]];

/** What a guest at the door reads, by `getState().lobbyStatus` (null: nothing to say). */
function doorStatus(state) {
  const lobby = state.lobbyStatus;
  const gate = state.gateMode;
  switch (lobby) {
    case "waiting": return { text: "Waiting for the host to let you in…", kind: "busy" };
    case "locked": return { text: "This room is locked. Ask the host to unlock it, then press Join again.", kind: "error" };
    case "full": return { text: "This room is full. Try again later, or start a new room and share its link.", kind: "error" };
    case "denied": return { text: "The host did not let you in. Ask them for a new invite.", kind: "error" };
    case "removed":
    case "kicked": return { text: "The host removed you from this call. You cannot rejoin it.", kind: "error" };
    case "not-listed": return { text: "This room lets in only the names on its list. Enter your name as the host knows it.", kind: "error" };
    case "needs-credential":
      return gate === "code" ? { text: "This room needs a code. Enter the code the host gave you.", kind: "info", code: true }
        : { text: "This room needs an invite. Open the invite link the host sent you.", kind: "error" };
    case "bad-credential":
      return gate === "code" ? { text: "That code is not right. Check it and try again.", kind: "error", code: true }
        : { text: "Your invite is not valid for this room. Ask the host for a new invite link.", kind: "error" };
    case "credential-in-use": return { text: "Someone is already in this call with your invite. You will get in when they leave; or ask the host for your own invite.", kind: "busy" };
    case "expired-credential": return { text: "Your invite has expired. Ask the host for a new invite link.", kind: "error" };
    default: return null;
  }
}

function createModeration(ui) {
  const { h, act, getCtl, getState, getPeople, getKnocks, render } = ui;
  const audits = new Map(); // agent id -> last audit entries
  const grants = new Map(); // agent id -> its grant as the engine last told us
  let confirming = null; // the id a "Remove?" confirmation is open for

  // ---- the code prompt (a guest at a code room's door)
  const codeInput = h("input", { type: "password", class: "code-input", autocomplete: "off", "aria-label": "Room code",
    placeholder: "Room code" });
  const codeForm = h("form", { class: "code-form", hidden: true, onsubmit: (ev) => {
    ev.preventDefault();
    const code = codeInput.value.trim();
    if (!code || !getCtl()) return;
    act("code", "code", async () => { await getCtl().setJoinCredential(code); codeInput.value = ""; });
  } }, codeInput, h("button", { type: "submit", class: "primary", text: "Enter" }));

  // ---- "I'm the host": the link carries the host key sealed with a password
  const hostPassword = h("input", { type: "password", class: "code-input", autocomplete: "current-password",
    "aria-label": "Host password", placeholder: "Host password" });
  const claimForm = h("form", { class: "code-form claim-form", hidden: true, onsubmit: (ev) => {
    ev.preventDefault();
    const pw = hostPassword.value;
    if (!pw || !getCtl()) return;
    act("claim", "host", async () => { await getCtl().claimHost(pw); hostPassword.value = ""; claimForm.hidden = true; });
  } }, hostPassword, h("button", { type: "submit", class: "primary", text: "I'm the host" }));
  const claimToggle = h("button", { type: "button", class: "linkish claim-toggle", hidden: true,
    text: "Are you the host? Unlock your host tools", onclick: () => { claimForm.hidden = false; hostPassword.focus(); } });

  const door = h("div", { class: "door", hidden: true }, codeForm, claimToggle, claimForm);

  // ---- the host's tools
  const lobbySwitch = h("input", { type: "checkbox", role: "switch", "aria-label": "Waiting room",
    onchange: () => act("lobby", "host", () => getCtl().setLobby(lobbySwitch.checked)) });
  const lockSwitch = h("input", { type: "checkbox", role: "switch", "aria-label": "Lock the room",
    onchange: () => act("lock", "host", () => getCtl().setLocked(lockSwitch.checked)) });
  const resetButton = h("button", { type: "button", class: "ghost", text: "Clear chat for everyone", onclick: () => {
    if (window.confirm("Clear the chat for everyone in this call?")) act("reset", "host", () => getCtl().resetRoom());
  } });
  const queue = h("ul", { class: "queue", "aria-label": "Waiting to join" });
  const hostTools = h("section", { class: "host-tools", "aria-label": "Host tools", hidden: true },
    h("h3", { text: "Host" }),
    h("div", { class: "switches" },
      h("label", { class: "switch" }, lobbySwitch, h("span", { text: "Waiting room" })),
      h("label", { class: "switch" }, lockSwitch, h("span", { text: "Locked" })),
      resetButton),
    queue);

  // ---- the agent consent panel
  const agents = h("ul", { class: "agents", "aria-label": "Agents in this call" });
  const consent = h("section", { class: "consent", "aria-label": "Agents: what they may see and do", hidden: true },
    h("h3", { text: "Agents" }), agents);

  function drawQueue(knocks) {
    queue.replaceChildren(...knocks.map((k) => h("li", { class: "knock", "data-id": k.id },
      h("span", { class: "kname", text: k.name || "Someone" }),
      h("button", { type: "button", class: "primary small", "aria-label": `Admit ${k.name || "this person"}`, text: "Admit",
        onclick: () => act(`admit:${k.id}`, "host", () => getCtl().admit(k.id)) }),
      h("button", { type: "button", class: "ghost small", "aria-label": `Deny ${k.name || "this person"}`, text: "Deny",
        onclick: () => act(`deny:${k.id}`, "host", () => getCtl().deny(k.id)) }))));
    queue.hidden = !knocks.length;
    if (!knocks.length) queue.replaceChildren(h("li", { class: "empty", text: "Nobody is waiting." }));
  }

  async function loadAgent(id) {
    const ctl = getCtl();
    if (!ctl) return;
    try {
      const [grant, audit] = await Promise.all([ctl.getCapabilityGrant(id), ctl.getAgentAudit(id, 6)]);
      grants.set(id, grant || null);
      audits.set(id, audit || []);
      drawAgents();
    } catch (err) { console.warn("Kibitz: could not read an agent's grant", err); }
  }

  function toggle(id, kind, cap, on) {
    const grant = grants.get(id) || { perceive: [], act: [] };
    const list = new Set(grant[kind] || []);
    if (on) list.add(cap); else list.delete(cap);
    const next = { ...grant, [kind]: [...list].sort() };
    act(`grant:${id}`, "grant", async () => { await getCtl().setCapabilityGrant(id, next); await loadAgent(id); });
  }

  function drawAgents() {
    const state = getState();
    const list = getPeople().filter((p) => p.kind === "agent" && !p.isSelf);
    const canGrant = !!state.canGrant;
    consent.hidden = !list.length || !(canGrant || state.isHost);
    agents.replaceChildren(...list.map((p) => {
      const meta = p.meta || {};
      const grant = grants.get(p.id);
      const box = (kind, [cap, label]) => {
        const on = !!grant && (grant[kind] || []).includes(cap);
        return h("label", { class: "cap" }, h("input", { type: "checkbox", checked: on, disabled: !canGrant || !grant,
          "aria-label": `${p.name || "Agent"}: ${label}`, onchange: (ev) => toggle(p.id, kind, cap, ev.target.checked) }),
        h("span", { text: label }));
      };
      const audit = (audits.get(p.id) || []).slice(-6).reverse();
      return h("li", { class: "agent", "data-id": p.id },
        h("div", { class: "agent-head" }, h("strong", { text: p.name || "Agent" }),
          h("span", { class: "disclosure", text: `model: ${meta.backend || "not said"}` }),
          h("span", { class: meta.egress ? "disclosure warn" : "disclosure",
            text: meta.egress ? "what it perceives leaves this call" : "stays on its machine" })),
        h("div", { class: "caps", role: "group", "aria-label": "May perceive" }, ...GRANT_PERCEIVE.map((c) => box("perceive", c))),
        h("div", { class: "caps", role: "group", "aria-label": "May do" }, ...GRANT_ACT.map((c) => box("act", c))),
        h("ol", { class: "audit", "aria-label": "Refused and changed" }, ...audit.map((e) => h("li", {
          text: `${e.kind === "blocked" ? "Refused" : "Grant"}: ${e.what}${e.detail ? ` (${e.detail})` : ""}` }))));
    }));
    for (const p of list) if (!grants.has(p.id)) { grants.set(p.id, null); loadAgent(p.id); }
  }

  /** Badges and the host's Remove (with a confirmation) on a participant's tile. */
  function decorateTile(tile, p) {
    let badges = tile.querySelector(".badges");
    if (!badges) { badges = h("span", { class: "badges" }); tile.append(badges); }
    const want = [p.role === "host" ? "Host" : null, p.kind === "agent" ? "Agent" : null].filter(Boolean);
    if (badges.dataset.v !== want.join(",")) {
      badges.dataset.v = want.join(",");
      badges.replaceChildren(...want.map((b) => h("span", { class: `tag ${b.toLowerCase()}`, text: b })));
    }
    let tools = tile.querySelector(".tile-tools");
    const canRemove = !!getState().isHost && !p.isSelf;
    if (!canRemove) { if (tools) tools.remove(); return; }
    if (!tools) { tools = h("span", { class: "tile-tools" }); tile.append(tools); }
    const name = p.name || "this person";
    if (confirming === p.id) {
      tools.replaceChildren(h("span", { class: "confirm", text: `Remove ${name}? They cannot come back.` }),
        h("button", { type: "button", class: "danger small", "aria-label": `Yes, remove ${name}`, text: "Remove",
          onclick: () => { confirming = null; act(`remove:${p.id}`, "host", () => getCtl().remove(p.id)); } }),
        h("button", { type: "button", class: "ghost small", text: "Cancel", onclick: () => { confirming = null; render(); } }));
    } else if (!tools.querySelector(".remove")) {
      tools.replaceChildren(h("button", { type: "button", class: "ghost small remove", "aria-label": `Remove ${name}`,
        title: `Remove ${name}`, text: "Remove", onclick: () => { confirming = p.id; render(); } }));
    }
  }

  function update(status) {
    const state = getState();
    codeForm.hidden = !(status && status.code);
    claimToggle.hidden = !state.hostKeySealed || state.isHost || !claimForm.hidden;
    if (state.isHost) claimForm.hidden = true;
    door.hidden = codeForm.hidden && claimToggle.hidden && claimForm.hidden;
    hostTools.hidden = !state.isHost;
    if (state.isHost) {
      lobbySwitch.checked = !!state.lobbyOn;
      lockSwitch.checked = !!state.locked;
      drawQueue(getKnocks());
    }
    drawAgents();
  }

  return { door, hostTools, consent, decorateTile, update, refreshAgent: loadAgent };
}

// A small app on the `kibitz` npm package: it uses every member the package documents, so
// `tsc --strict --noEmit` here (tests/unit/test_packaging_npm.py, against dist/npm/ installed as
// node_modules/kibitz) fails when a declaration drifts from what the app was written against.
import {
  createRoom, load, mount, version,
  type ChatLine, type Grant, type KibitzGlobal, type Knock, type LobbyStatus, type MountedWidget,
  type NewRoom, type Participant, type Timings, type WidgetState,
} from "kibitz";

const server = "https://kibitz.example.org";

export async function hostARoom(): Promise<{ room: NewRoom; call: MountedWidget }> {
  const room: NewRoom = await createRoom({ server, gate: "invite", lobby: true, hostPassword: "correct horse" });
  const invite: { token: string; link: string } = await room.mintInvite("Dana", 3600);
  console.log(room.link, room.code, room.inviteKey, invite.link);
  const call = await mount({
    server, room: room.room, joinGate: room.joinGate, hostKey: room.hostKey, headless: true, name: "Host",
    identity: "seat-1", meta: { seat: 1 }, relayOnly: false,
  });
  await call.ready;
  return { room, call };
}

export async function everything(call: MountedWidget, Kibitz: KibitzGlobal): Promise<void> {
  // The global the package loads.
  const same: KibitzGlobal = await load(server);
  const t: Timings = Kibitz.timings;
  console.log(version, same.version, Kibitz.server, t.bootPath, Kibitz.auto?.getState().inCall);
  const other: MountedWidget = Kibitz.mount({ room: "room-npm-example-2", headless: true });
  other.unmount();
  const made: NewRoom = await Kibitz.createRoom({ gate: "invite" });
  await Kibitz.mintInvite(made, "Eve", 600);

  // The controller: its synchronous members ...
  const timings: Timings = call.timings;
  const state: WidgetState = call.getState();
  const people: Participant[] = call.getParticipants();
  const knocks: Knock[] = call.getKnocks();
  const chat: ChatLine[] = call.getChat();
  console.log(timings.engineReady, state.lobbyStatus, people.length, knocks.length, chat.length);
  call.broadcast({ route: "#/menu" });
  if (people[0]) call.sendTo(people[0].id, { direct: true });
  const offMessage: () => void = call.onMessage((data: unknown, from: string) => console.log(from, data));
  offMessage();
  const offs: Array<() => void> = [
    call.on("participants", (ps: Participant[]) => console.log(ps.length)),
    call.on("join", (p: Participant) => console.log(p.name)),
    call.on("leave", (p: Participant) => console.log(p.id)),
    call.on("speaking", (id: string, speaking: boolean) => console.log(id, speaking)),
    call.on("state", (s: WidgetState) => console.log(s.inCall)),
    call.on("knocks", (ks: Knock[]) => console.log(ks.length)),
    call.on("lobby", (status: LobbyStatus) => console.log(status)),
    call.on("message", (data: unknown, from: string) => console.log(data, from)),
    call.on("chat", (line: ChatLine | null) => console.log(line?.text)),
    call.on("caps", (grant: Grant) => console.log(grant.perceive)),
    call.on("resume", (info: { rejoined: boolean }) => console.log(info.rejoined)),
    call.on("engine", (info: { state: "stopped" | "ready"; reason?: string }) => {
      // The engine's Worker crashed or hung (the page is fine): start it again.
      if (info.state === "stopped") call.restartEngine().catch((err: Error) => console.error(err.message, info.reason));
    }),
  ];
  console.log(call.refusedByEngine);
  offs.forEach((off) => off());

  // ... and the ones that run in the engine (each a promise).
  await call.join({ mic: true, cam: false });
  const micOn: boolean = await call.toggleMic();
  const camOn: boolean = await call.toggleCam();
  console.log(micOn, camOn);
  await call.shareScreen();
  const [track] = (await navigator.mediaDevices.getUserMedia({ video: true })).getVideoTracks();
  if (track) await call.shareTrack(track);
  await call.stopShare();
  await call.setName("Dana");
  await call.setAvatar("🦊");
  await call.setMeta({ seat: 2 });
  const line: ChatLine = await call.sendChat("hello", people[0]?.id);
  console.log(line.ts);
  const lobby: boolean = await call.setLobby(true);
  const admitted: boolean = await call.admit("peer-a");
  const denied: boolean = await call.deny("peer-b");
  const removed: boolean = await call.remove("peer-c");
  const unbanned: boolean = await call.unban("peer-c");
  const locked: boolean = await call.setLocked(false);
  const reset: boolean = await call.resetRoom();
  console.log(lobby, admitted, denied, removed, unbanned, locked, reset);
  await call.setJoinCredential("123456");
  await call.claimHost("correct horse");
  await call.knock("Dana", "🦊");
  const grant: Grant | null = await call.getCapabilityGrant("agent-1");
  await call.setCapabilityGrant("agent-1", grant ? { ...grant, act: [...grant.act, "send-chat"] } : null);
  const audit: unknown[] = await call.getAgentAudit("agent-1", 10);
  console.log(audit.length);
  const link: string = await call.createInviteLink();
  console.log(link);
  await call.setRelayOnly(true);
  const el: HTMLElement = document.createElement("div");
  await call.signInIdentity(el, "email");
  const nonce: string = await call.identityNonce();
  await call.provideIdentityToken(nonce);
  const refusals: Record<string, unknown> = await call.getIdentityStats();
  console.log(Object.keys(refusals).length);
  await call.leave();
  call.unmount();
}

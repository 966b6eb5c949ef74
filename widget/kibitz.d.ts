// Type declarations for widget.js: `window.Kibitz`, MountOptions and MountedWidget.
// The engine behind them is Python (Pyodide); these are the page-facing types only.

export type JoinGateMode = "open" | "names" | "code" | "email" | "google" | "invite";

/** A room's settings, as `Kibitz.createRoom` returns them and its link carries them. Unknown
 * fields, unknown modes and a mode without what it needs are refused (a gated room never falls back
 * to open). `email` and `google` admit members verified by that provider (`allowed` narrows it). */
export interface JoinGate {
  mode: JoinGateMode;
  /** names: who may enter (no security: anyone can type a listed name). */
  names?: string[];
  /** code: salt.verifier of the code (a slow hash; the code itself is never in the link). */
  codeCheck?: string;
  /** invite: the public key that signs invites. */
  inviteKey?: string;
  /** The host: by key (its public half), by display name (soft), or by email (identity). */
  host?: { key?: string; name?: string; email?: string };
  /** The waiting room is on from the start. */
  lobby?: boolean;
  /** The host's key, sealed with the host password (PBKDF2 + AES-GCM). */
  sealedHostKey?: string;
}

export interface CreateRoomOptions {
  gate?: "open" | "names" | "code" | "invite";
  names?: string[];
  /** code gate: the code (default: a fresh one, returned as `code`). */
  code?: string;
  /** Host tier; default "key" (you get `hostKey`). */
  host?: "key" | "name" | "none";
  hostName?: string;
  /** Seal the host key into the link with this password (at least 8 characters). */
  hostPassword?: string;
  lobby?: boolean;
  /** The page the link opens; default this page without its fragment. */
  baseUrl?: string;
}

export interface NewRoom {
  room: string;
  joinGate: JoinGate;
  /** Share it: the room and its settings (never a secret). */
  link: string;
  /** Only for the host: pass it to `mount({ hostKey })`. */
  hostKey?: string;
  /** Only for whoever hands out invites (invite gate). */
  inviteKey?: string;
  /** The code of a code gate: tell guests by another channel than the link. */
  code?: string;
  /** An invite for one guest, valid `ttlSeconds`: its token and the link that carries it. */
  mintInvite(name: string, ttlSeconds: number): Promise<{ token: string; link: string }>;
}

export interface MountOptions {
  /** The call everyone joins. Same string → same call. Make it unguessable. Required. */
  room: string;
  /** Pre-fills the visitor's display name (they can still edit it). Default ''. */
  name?: string;
  /** Open the panel immediately instead of the corner launcher. Default false. */
  startOpen?: boolean;
  /** Show the panel as a local self-view only; never dials a room. Default false. */
  preview?: boolean;
  /** Render no built-in UI; drive everything through the controller. Default false. */
  headless?: boolean;
  /** Stable per-user / per-seat id, so a reconnect is recognized as the same participant. */
  identity?: string;
  /** Opaque per-participant metadata carried in the roster. Default {}. */
  meta?: Record<string, unknown>;
  /** Signaling host or URL; default: the server that served widget.js. */
  signalHost?: string;
  /** Host or URL of an independent provider's /api/turn (and its bill); default: the widget's
   * server. A mount option only: a link can never point a joiner's relay elsewhere. */
  turnHost?: string;
  /** Premium licence (bearer token) sent to /api/turn; also lets this member's invite links
   * sponsor their joiners (createInviteLink). Never put into a link. */
  licenseKey?: string;
  /** Signed room grant sent to /api/turn as X-Kibitz-Grant. Default: the page's ?grant= (or
   * ?k=), adopted at load and removed from the address bar. */
  grant?: string;
  /** Hide my IP: every connection goes through the relay (iceTransportPolicy 'relay'); without
   * relay credentials the call does not connect and getState().relayError says why. Widget
   * mounts also honour the panel's remembered "Hide my IP" switch. Default false. */
  relayOnly?: boolean;
  /** A LAN hub (`kibitz hub`) to signal through instead of the internet (offline rooms): the value
   * `?galaxy=` carries (`g1|…`), or 'off' for none. Default: the page's ?galaxy=, which is kept in
   * localStorage ('kbz.galaxy') until a ?galaxy=off link. While one is set nothing asks /api/*. */
  galaxy?: string;
  /** Who-can-join gate decoded from the room link. */
  joinGate?: JoinGate;
  /** This peer's credential: the room's code (code mode) or its own signed invite (invite mode). */
  joinCredential?: string;
  /** The host's private key (`kbzk1.…`), from `createRoom`; keep it secret. */
  hostKey?: string;
  /** Opens the host key the link carries sealed; a wrong one leaves you a guest (`state.hostError`). */
  hostPassword?: string;
  /** Base URL of the email-code backend; default: the widget's server. */
  apiBase?: string;
  /** Verified identity: whose sign-ins this tab trusts ("email" is the apiBase server's codes),
   * who is allowed, and whether content waits until every peer is verified (`require`). Tokens
   * are bound to this page's own DTLS certificate (kept in IndexedDB, the same after a reload). */
  verifyIdentity?: VerifyIdentity;
}

export type IdentityProvider =
  | "email"
  | { type: "email"; apiBase?: string }
  | { type: "google"; clientId: string }
  | { type: "oidc"; issuer: string; clientId: string };

export interface VerifyIdentity {
  providers: IdentityProvider[];
  allowedEmails?: string[];
  allowedDomains?: string[];
  require?: boolean;
}

/** What `signInIdentity` and `provideIdentityToken` resolve with. */
export interface SignedIn {
  status: "verified" | "pending";
  email?: string;
}

/** Where you stand at the door: stable words an app can switch on. */
export type LobbyStatus =
  | "waiting" | "admitted" | "denied" | "locked" | "full" | "removed" | "needs-credential"
  | "bad-credential" | "expired-credential" | "not-listed" | "unverified"
  | "credential-in-use" | null;

export interface WidgetState {
  inCall: boolean;
  micOn: boolean;
  camOn: boolean;
  sharing: boolean;
  /** Your own participant id once known, else null. */
  self: string | null;
  isHost: boolean;
  lobbyOn: boolean;
  locked: boolean;
  lobbyStatus: LobbyStatus;
  identityEnabled?: boolean;
  selfEmail?: string | null;
  rosterActive?: boolean;
  rosterCanShare?: boolean;
  rosterCompromised?: boolean;
  /** Member id of the room's current coordinator (keeps the roster), else null. */
  coordinator?: string | null;
  isCoordinator?: boolean;
  /** Connected to the room's presence (also while not in the call). */
  connected?: boolean;
  /** The room's host tier and gate mode. */
  hostTier?: "none" | "name" | "key" | "email";
  gateMode?: JoinGateMode;
  /** Whether you may change participants' grants (the host; anyone in a room without one). */
  canGrant?: boolean;
  /** The link carries the host key sealed and you are not the host yet: `claimHost(password)`. */
  hostKeySealed?: boolean;
  /** Why a hostPassword did not open the host key. */
  hostError?: string;
  /** Every connection goes through the relay (relayOnly / Hide my IP). */
  relayOnly?: boolean;
  /** What /api/turn granted: 'open' | 'premium' | 'room' (relay) or 'free' | 'capped' (none);
   * null until it answered or when it could not be asked. */
  relayTier?: string | null;
  /** Why a relay-only member stays out of the call (no relay credentials), else null. */
  relayError?: string | null;
  /** 'hub' when signaling goes through a LAN hub (?galaxy=), else 'broker'. */
  signaling?: "hub" | "broker";
}

export interface Participant {
  id: string;
  name: string;
  isSelf: boolean;
  camOn: boolean;
  micOn: boolean;
  speaking: boolean;
  /** Remote: audio + video from this participant (mutated in place on swaps and re-dials).
   * Self: your local capture. null until a first track exists. */
  stream: MediaStream | null;
  meta: Record<string, unknown>;
  role: "host" | "guest";
  avatar?: string | null;
  kind?: "human" | "agent";
  /** The direct data link to this participant is up (always true for yourself). */
  linkUp?: boolean;
  /** The address this participant's identity token proved on your link to it, else null. */
  verifiedEmail?: string | null;
  /** The safety code with this participant: 4 emoji from both certificates (the same on both
   * ends; compare them out loud), and their names. null for yourself or before the link is up. */
  safetyCode?: string | null;
  safetyWords?: string[] | null;
}

export interface ChatLine {
  id: string;
  from: string;
  name: string;
  text: string;
  ts: number;
  direct?: boolean;
  [key: string]: unknown;
}

export interface Knock {
  id: string;
  name: string;
  avatar?: string;
}

export interface Grant {
  perceive: string[];
  act: string[];
  [key: string]: unknown;
}

export interface WidgetEvents {
  participants: (people: Participant[]) => void;
  join: (participant: Participant) => void;
  leave: (participant: Participant) => void;
  speaking: (id: string, speaking: boolean) => void;
  state: (state: WidgetState) => void;
  knocks: (knocks: Knock[]) => void;
  lobby: (status: LobbyStatus) => void;
  message: (data: unknown, from: string) => void;
  /** A chat line (sent or received); null when the room's chat was reset. */
  chat: (line: ChatLine | null) => void;
  /** Your own capability grant changed. */
  caps: (grant: Grant) => void;
  /** The page came back from the back/forward cache, or the engine was restarted: a fresh session
   * was opened (your id changes) and, if you were in the call, it is being joined again with the
   * same mic and camera. */
  resume: (info: { rejoined: boolean }) => void;
  /** The call engine (its own Worker) stopped (crashed or hung; the page is unaffected), or is
   * running again after `restartEngine()`. */
  engine: (info: { state: "stopped" | "ready"; reason?: string }) => void;
}

export interface Timings {
  /** performance.now() when widget.js started running. */
  scriptStart: number;
  /** performance.now() when the launcher was attached (null while headless / not yet). */
  launcherShown: number | null;
  /** performance.now() when the first mount's engine session was ready. */
  engineReady: number | null;
  /** Milliseconds spent booting Pyodide and loading the engine's packages. */
  bootMs: number | null;
  /** Milliseconds spent asking /api/signal for the room's broker (in parallel with the boot). */
  signalMs: number | null;
  /** Where the engine runs: "worker" (its own thread), or "page" where no Worker could start. */
  engineIn?: "worker" | "page";
  /** How the engine booted: "snapshot", "plain", or "fallback" (the snapshot failed; see console). */
  bootPath: "snapshot" | "plain" | "fallback" | null;
  /** performance.now() marks of a snapshot boot: started, snapshot bytes ready, restored. */
  restoreStart?: number;
  snapshotAt?: number;
  restoredAt?: number;
  /** Milliseconds of `loadPyodide` (runtime), rebind + files or wheels (packages), engine import,
   * and opening the first session. */
  runtimeMs: number | null;
  packagesMs: number | null;
  importMs: number | null;
  openMs?: number;
}

export interface MountedWidget {
  /** Settles once the Python engine has booted for this mount (rejects with a clear Error if it cannot). */
  readonly ready: Promise<void>;
  readonly timings: Timings;
  /** Remove the widget and tear down the call. */
  unmount(): void;
  /** Send a structured-clone-able value to everyone else; a no-op until the data link is up.
   * Values travel as JSON; Date, Map, Set, BigInt, NaN/±Infinity, undefined in arrays, ArrayBuffer,
   * typed arrays, RegExp and Error are tagged and rebuilt on arrival. Functions throw DataCloneError. */
  broadcast(data: unknown): void;
  /** Send a value to one participant, directly peer-to-peer (no one relays it). Throws an Error
   * with the reason when refused: the addressee is not in the call, or may not receive directed
   * messages under its capability grant (checked against the engine's last word; a refusal the
   * engine makes later, a grant changing in that instant, is logged and counted in
   * `refusedByEngine`). A no-op before the engine is ready. */
  sendTo(id: string, data: unknown): void;
  /** Additive; returns an unsubscribe function. */
  onMessage(cb: (data: unknown, from: string) => void): () => void;
  on<E extends keyof WidgetEvents>(event: E, cb: WidgetEvents[E]): () => void;
  getState(): WidgetState;
  getParticipants(): Participant[];
  getKnocks(): Knock[];
  /** Chat lines seen since mount (sent and received), oldest first. */
  getChat(): ChatLine[];
  /** Sends the engine refused after the page had let them through (see sendTo). */
  readonly refusedByEngine: number;
  /** After the engine stopped (an "engine" event with state "stopped"): start a fresh engine, open
   * this mount's session again and rejoin the call if it was in one. The page never reloads. */
  restartEngine(): Promise<void>;
  /** Turn Hide my IP on or off for this mount: reconnects (and rejoins) with the new policy. */
  setRelayOnly(on: boolean): Promise<void>;
  /* @engine-members: build/build.py writes kibitz.controller.ENGINE_MEMBERS here */
}

export interface KibitzGlobal {
  readonly version: string;
  /** Base URL of the server that served widget.js (assets, broker and /api default to it). */
  readonly server: string;
  readonly timings: Timings;
  /** The widget mounted by a `data-room` script tag, if any. */
  auto: MountedWidget | null;
  /** Returns the controller at once; throws if `room` is missing. */
  mount(options: MountOptions): MountedWidget;
  /** A fresh room whose id commits to these settings; no server involved. */
  createRoom(options?: CreateRoomOptions): Promise<NewRoom>;
  /** An invite to a room made by createRoom (needs its inviteKey), valid `ttlSeconds`. */
  mintInvite(room: Pick<NewRoom, "room" | "joinGate" | "link" | "inviteKey">, name: string,
    ttlSeconds: number): Promise<{ token: string; link: string }>;
}

declare global {
  interface Window {
    Kibitz: KibitzGlobal;
  }
  const Kibitz: KibitzGlobal;
}

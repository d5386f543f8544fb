"use strict";
// The page's side of `diamond-play serve` (protocol: diamond_play/serve/app.py). Keys are sent by the names
// pygame gives them, so the server's controls are the window's.

const CODE_NAMES = {
  Space: "space", Enter: "return", Period: ".", Comma: ",", Minus: "-", Equal: "=", Slash: "/", Semicolon: ";",
  Quote: "'", BracketLeft: "[", BracketRight: "]", Backslash: "\\", Backquote: "`",
  ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down",
  ControlLeft: "left ctrl", ControlRight: "right ctrl", ShiftLeft: "left shift", ShiftRight: "right shift",
};
function keyName(code) {
  if (code.startsWith("Key")) return code.slice(3).toLowerCase();
  if (code.startsWith("Digit")) return code.slice(5);
  return CODE_NAMES[code] || null;
}

const $ = (id) => document.getElementById(id);
const canvas = $("screen"), ctx = canvas.getContext("2d");
let socket = null, engine = null;
const held = new Set(), buttons = new Set();
let dx = 0, dy = 0, commands = [], dirty = false;

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/ws${location.search}`;
}
function say(text) { $("message").textContent = text; }

async function listEngines() {
  const response = await fetch("api/engines" + location.search);
  if (!response.ok) { say(await response.text()); return; }
  const data = await response.json();
  const list = $("engines");
  list.textContent = "";
  for (const e of data.engines) {
    const b = document.createElement("button");
    const [h, w] = e.frame_size;
    b.textContent = `${e.game} (${e.kind}, ${e.origin}): ${w}x${h}, ${e.sampling}` +
      (e.policy ? ", with a policy" : "");
    b.onclick = () => start(e);
    list.appendChild(b);
  }
  if (data.playing >= data.max_sessions) say(`server full, ${data.playing} playing`);
}

function start(e) {
  engine = e;
  const spawn = $("spawn").value === "" ? null : Number($("spawn").value);
  const preset = $("preset");
  preset.hidden = e.presets.length === 0;
  if (preset.options.length === 0 || preset.dataset.engine !== e.id) {
    preset.textContent = "";
    for (const name of e.presets) preset.add(new Option(`preset: ${name}`, name));
    preset.dataset.engine = e.id;
  }
  connect({type: "start", engine: e.id, spawn: spawn, preset: e.presets.length ? preset.value : null});
}

function connect(startMessage) {
  if (socket) socket.close();
  say("starting...");
  socket = new WebSocket(wsUrl());
  socket.binaryType = "blob";
  socket.onopen = () => socket.send(JSON.stringify(startMessage));
  socket.onmessage = async (event) => {
    if (typeof event.data !== "string") { draw(await createImageBitmap(event.data)); return; }
    const msg = JSON.parse(event.data);
    if (msg.type === "ready") {
      say("");
      $("chooser").style.display = "none";
      $("game").classList.add("on");
      $("keys").textContent = msg.keys.join("\n") +
        "\nEnter reset, . pause, e step while paused, m human/policy, left/right view, up/down horizon, h HUD";
      canvas.focus();
    } else if (msg.type === "hud") {
      const shared = msg.batch > 1 ? [`one batch with ${msg.batch - 1} other player(s)`] : [];
      const rec = msg.recording === null ? [] : [`RECORDING ${msg.recording} steps`];
      $("hud").textContent = msg.lines.concat(shared, rec).join("\n");
      $("record").classList.toggle("on", msg.recording !== null);
      $("record").textContent = msg.recording === null ? "record" : "stop recording";
    } else if (msg.type === "recording") {
      offerRecording(msg);
    } else if (msg.type === "full") {
      say(`server full, ${msg.playing} playing (at most ${msg.max_sessions}): try again later`);
    }
  };
  socket.onclose = (event) => {
    if (event.reason) say(`closed: ${event.reason}`);
    socket = null;
  };
}

function offerRecording(msg) {
  // Links stay on the page (the server keeps the files a while); each is also downloaded at once.
  const line = document.createElement("div");
  const names = Object.keys(msg.files);
  line.append(`recording: ${msg.steps} steps, ${msg.episodes} episode(s) `);
  if (names.length === 0) line.append("(nothing was played)");
  for (const name of names) {
    const a = document.createElement("a");
    a.href = msg.files[name] + location.search;
    a.download = `diamond-play-${msg.id.slice(0, 6)}-${name}`;
    a.textContent = name;
    line.append(a);
    a.click();
  }
  $("recordings").prepend(line);
}

function draw(bitmap) {
  const smooth = engine && engine.kind === "csgo";
  const scale = Math.max(1, Math.floor((smooth ? 640 : 512) / Math.max(bitmap.width, bitmap.height)));
  if (canvas.width !== bitmap.width * scale || canvas.height !== bitmap.height * scale) {
    canvas.width = bitmap.width * scale;
    canvas.height = bitmap.height * scale;
  }
  ctx.imageSmoothingEnabled = smooth;  // Atari pixels stay crisp
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
}

function send() {
  if (!socket || socket.readyState !== WebSocket.OPEN || !dirty) return;
  socket.send(JSON.stringify({type: "input", keys: [...held], buttons: [...buttons], dx: Math.round(dx),
                              dy: Math.round(dy), commands: commands}));
  dx = dy = 0;
  commands = [];
  dirty = false;
}
setInterval(send, 20);

canvas.addEventListener("keydown", (e) => {
  const name = keyName(e.code);
  if (name === null) return;
  e.preventDefault();
  if (!held.has(name)) { held.add(name); dirty = true; send(); }
});
canvas.addEventListener("keyup", (e) => {
  const name = keyName(e.code);
  if (name !== null && held.delete(name)) { dirty = true; send(); }
});
canvas.addEventListener("blur", () => { held.clear(); buttons.clear(); dirty = true; send(); });
canvas.addEventListener("click", () => {
  canvas.focus();
  if (engine && engine.kind === "csgo" && document.pointerLockElement !== canvas) canvas.requestPointerLock();
});
canvas.addEventListener("mousedown", (e) => {
  if (document.pointerLockElement !== canvas) return;
  buttons.add(e.button === 2 ? 3 : 1); dirty = true; send();
});
canvas.addEventListener("mouseup", (e) => { buttons.delete(e.button === 2 ? 3 : 1); dirty = true; send(); });
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
document.addEventListener("mousemove", (e) => {
  if (document.pointerLockElement !== canvas) return;
  dx += e.movementX; dy += e.movementY; dirty = true;
});
for (const b of document.querySelectorAll("[data-command]")) {
  b.onclick = () => { commands.push(b.dataset.command); dirty = true; send(); canvas.focus(); };
}
$("record").onclick = () => {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({type: "record", on: !$("record").classList.contains("on")}));
  }
  canvas.focus();
};
$("preset").onchange = () => { if (engine) start(engine); };
$("leave").onclick = () => {
  if (socket) socket.close();
  $("game").classList.remove("on");
  $("chooser").style.display = "";
  listEngines();
};
listEngines();

// The chat page: plain JavaScript, no build step. It talks to the plugs in
// ../plugs through the client the server serves at /ssocket.js.
//
// Requests that want an answer use client.request() (a tagged request: the
// answer is matched to it even with others in flight, and an ERROR rejects
// the promise); notices from the server arrive as events:
//   message  {room, client, name, text, at}   someone said something
//   joined   {room, client, name}             someone joined a room you are in
//   left     {room, client, name}             someone left it (or closed the page)
//   renamed  {room, client, name, old}        someone changed nickname
import { SsocketClient } from '/ssocket.js';

const $ = (id) => document.getElementById(id);
const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const client = new SsocketClient(url, { reconnect: true });

const MAX_LINES = 200; // per room, in the page

const state = {
  me: null,            // {client, name} as the server last said
  nick: null,          // the nickname asked for: sent again after a reconnect
  rooms: new Map(),    // room -> {lines: [...], online: Map(client -> name), unread}
  current: null,       // the room shown
  allRooms: [],        // [{room, count}] from the `rooms` plug
};

// ---- talking to the server ----

async function setNick(name) {
  const you = await client.request('nick', { name });
  state.nick = you.name;
  state.me = you;
  for (const room of state.rooms.values()) {
    if (room.online.has(you.client)) room.online.set(you.client, you.name);
  }
  $('nick').value = you.name;
  render();
}

async function join(name, { rejoin = false } = {}) {
  const r = await client.request('join', { room: name });
  state.me = r.you;
  const lines = r.history.map((line) => ({ kind: 'message', history: true, ...line }));
  if (lines.length) lines.push({ kind: 'divider', text: 'earlier messages above' });
  lines.push({ kind: 'notice', text: rejoin ? `You are back in ${r.room}` : `You joined ${r.room}`, at: Date.now() });
  state.rooms.set(r.room, { lines, online: new Map(r.online.map((p) => [p.client, p.name])), unread: 0 });
  if (!rejoin || !state.current) show(r.room);
  else render();
  refreshAllRooms();
}

async function leave(name) {
  await client.request('leave', { room: name });
  state.rooms.delete(name);
  if (state.current === name) state.current = state.rooms.keys().next().value ?? null;
  render();
  refreshAllRooms();
}

async function say(text) {
  const line = await client.request('say', { room: state.current, text });
  addLine(line.room, { kind: 'message', ...line });
}

async function refreshAllRooms() {
  if (!client.connected) return;
  try {
    const { rooms } = await client.request('rooms', {});
    if (JSON.stringify(rooms) === JSON.stringify(state.allRooms)) return;
    state.allRooms = rooms;
    renderAllRooms();
  } catch { /* a refresh can wait for the next one */ }
}

client.on('message', (p) => addLine(p.room, { kind: 'message', ...p }));
client.on('joined', (p) => {
  const room = state.rooms.get(p.room);
  if (!room) return;
  room.online.set(p.client, p.name);
  addLine(p.room, { kind: 'notice', text: `${p.name} joined`, at: Date.now() }, { unread: false });
});
client.on('left', (p) => {
  const room = state.rooms.get(p.room);
  if (!room) return;
  room.online.delete(p.client);
  addLine(p.room, { kind: 'notice', text: `${p.name} left`, at: Date.now() }, { unread: false });
});
client.on('renamed', (p) => {
  const room = state.rooms.get(p.room);
  if (!room) return;
  room.online.set(p.client, p.name);
  addLine(p.room, { kind: 'notice', text: `${p.old} is now known as ${p.name}`, at: Date.now() }, { unread: false });
});
client.onError((err) => showError(err));

client.onOpen(async () => {
  setStatus('open', 'connected');
  // After a reconnect the server knows nothing of us: say who we are and
  // where we were again.
  try {
    if (state.nick) await setNick(state.nick);
    for (const name of [...state.rooms.keys()]) await join(name, { rejoin: true });
  } catch (e) {
    showError(e);
  }
  refreshAllRooms();
});
client.onClose(({ willReconnect }) => {
  setStatus('closed', willReconnect ? 'reconnecting…' : 'disconnected');
  render();
});
setInterval(refreshAllRooms, 5000);

// ---- the page ----

function addLine(roomName, line, { unread = true } = {}) {
  const room = state.rooms.get(roomName);
  if (!room) return;
  room.lines.push(line);
  if (room.lines.length > MAX_LINES) room.lines.splice(0, room.lines.length - MAX_LINES);
  if (roomName !== state.current && unread) room.unread++;
  render();
}

function show(roomName) {
  state.current = roomName;
  const room = state.rooms.get(roomName);
  if (room) room.unread = 0;
  render();
  $('text').focus();
}

function setStatus(value, text) {
  $('status').dataset.state = value;
  $('status').textContent = text;
}

function showError(e) {
  // Server errors read "plug `say` failed: join "x" first": keep the reason.
  $('error').textContent = String(e?.message ?? e).replace(/^plug `[^`]*` failed: /, '');
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { $('error').textContent = ''; }, 6000);
}

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });

function render() {
  const room = state.rooms.get(state.current);
  $('me').textContent = state.me ? `you are ${state.me.name}` : '';
  $('room-title').textContent = room ? `# ${state.current}` : 'Join a room to start';
  const canSay = !!room && client.connected;
  $('text').disabled = !canSay;
  $('send').disabled = !canSay;
  renderMyRooms();
  renderMessages(room);
  renderOnline(room);
}

function renderMyRooms() {
  const items = [...state.rooms].map(([name, room]) => {
    const li = el('li', { className: name === state.current ? 'current' : '', title: `show ${name}` },
      el('span', { className: 'name', textContent: `# ${name}` }),
      el('span', { className: 'unread', textContent: room.unread ? String(room.unread) : '' }),
      el('button', { className: 'leave', type: 'button', title: `leave ${name}`, textContent: '×' }));
    li.dataset.room = name;
    li.addEventListener('click', (e) => {
      if (e.target.classList.contains('leave')) leave(name).catch(showError);
      else show(name);
    });
    return li;
  });
  $('my-rooms').replaceChildren(...items);
}

function renderAllRooms() {
  const items = state.allRooms.map(({ room, count }) => {
    const li = el('li', { title: state.rooms.has(room) ? `show ${room}` : `join ${room}` },
      el('span', { className: 'name', textContent: `# ${room}` }),
      el('span', { className: 'count', textContent: `${count} online` }));
    li.dataset.room = room;
    li.addEventListener('click', () => (state.rooms.has(room) ? show(room) : join(room).catch(showError)));
    return li;
  });
  $('all-rooms').replaceChildren(...items);
}

function renderMessages(room) {
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const rows = (room?.lines ?? []).map((line) => {
    if (line.kind === 'divider') return el('div', { className: 'divider' }, el('span', { textContent: line.text }));
    const mine = line.kind === 'message' && line.client === state.me?.client && !line.history;
    const row = el('div', { className: ['msg', line.kind, line.history ? 'history' : '', mine ? 'mine' : ''].join(' ').trim() },
      el('span', { className: 'time', textContent: clock(line.at) }));
    if (line.kind === 'message') row.append(el('span', { className: 'from', textContent: line.name }));
    row.append(el('span', { className: 'text', textContent: line.text }));
    row.dataset.kind = line.kind;
    if (line.history) row.dataset.history = 'true';
    return row;
  });
  box.replaceChildren(...rows);
  if (atBottom || !room) box.scrollTop = box.scrollHeight;
}

function renderOnline(room) {
  const people = room ? [...room.online].sort((a, b) => a[1].localeCompare(b[1]) || a[0] - b[0]) : [];
  $('online').replaceChildren(...people.map(([id, name]) => {
    const li = el('li', { className: id === state.me?.client ? 'me' : '', textContent: name });
    li.dataset.client = String(id);
    return li;
  }));
  $('online-count').textContent = room ? `(${people.length})` : '';
}

// ---- forms ----

$('nick-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('nick').value.trim();
  if (name) setNick(name).catch(showError);
});
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('room-name').value.trim();
  if (!name) return;
  if (state.rooms.has(name)) show(name);
  else join(name).catch(showError);
});
$('say-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!text || !state.current) return;
  $('text').value = '';
  say(text).catch(showError);
});
$('refresh-rooms').addEventListener('click', refreshAllRooms);

render();

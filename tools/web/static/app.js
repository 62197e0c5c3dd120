// glmvoice web demo: signalling over the WebSocket /ws, audio over WebRTC (the server is the
// offerer; the browser answers with its microphone), everything else as JSON messages.
// window.glmvoiceTest exposes the page's state for the browser test (tests/web/).
'use strict';

const $ = (id) => document.getElementById(id);
const PREROLL_SECONDS = 0.5;   // audio kept before "answer-start" (the jitter buffer's delay)
const ANSWER_TAIL_MS = 600;    // recording continues this long after "answer-end"

const state = {
  ws: null, pc: null, session: null, connected: false, ice: 'new', tiny: false,
  models: { state: 'unknown', steps: [] }, errors: [], turns: [],
  textTurn: 0, audioTurn: 0, debugTurn: 0,
  rtc: { packetsReceived: 0, bytesReceived: 0, packetsSent: 0 },
  ctx: null, micStream: null, remoteStream: null, recorder: null,
  recording: null, preroll: [], prerollSamples: 0, analysers: {},
  queue: Promise.resolve(), received: {},
};

// ---- WebSocket ---------------------------------------------------------------------------
function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => { state.connected = true; setPill('conn', 'connected', 'ok'); };
  ws.onclose = () => {
    state.connected = false;
    setPill('conn', 'disconnected', 'bad');
    $('start').disabled = false; $('stop').disabled = true;
  };
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    state.received[m.type] = (state.received[m.type] || 0) + 1;
    // In order: an ICE candidate must wait until the offer it belongs to is applied.
    state.queue = state.queue.then(() => handle(m)).catch((err) => showError(`page: ${m.type}: ${err}`));
  };
}
function send(obj) { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(obj)); }

async function handle(m) {
  switch (m.type) {
    case 'welcome':
      state.session = m.session; state.tiny = m.tiny;
      $('session').textContent = `session ${m.session}`;
      $('tiny').hidden = !m.tiny;
      if (m.defaults && m.defaults.max_new_tokens) $('max_new_tokens').value = m.defaults.max_new_tokens;
      setModels(m.models);
      break;
    case 'models': setModels(m); break;
    case 'progress': addProgress(m); break;
    case 'offer': await onOffer(m.sdp); break;
    case 'ice': if (state.pc && m.candidate) await state.pc.addIceCandidate({ candidate: m.candidate, sdpMLineIndex: m.sdpMLineIndex }); break;
    case 'ice-state': setPill('ice', `WebRTC: ${m.state}`, m.state === 'connected' || m.state === 'completed' ? 'ok' : (m.state === 'failed' ? 'bad' : '')); state.ice = m.state; break;
    case 'user-turn': onUserTurn(m); break;
    case 'answer-text': onAnswerText(m.text); break;
    case 'text-end': onTextEnd(m.reason); break;
    case 'answer-start': onAnswerStart(); break;
    case 'answer-end': onAnswerEnd(m); break;
    case 'turn': onTurnDebug(m); break;
    case 'reset-done': note('history reset'); break;
    case 'error': showError(m.message); break;
    case 'closed': showError(`session closed: ${m.reason}`); break;
  }
}

// ---- WebRTC ------------------------------------------------------------------------------
async function start() {
  $('start').disabled = true;
  state.ctx = state.ctx || new AudioContext();
  await state.ctx.resume();
  setupRecorder();
  send({ type: 'start' });
  sendControls();
}

async function onOffer(sdp) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'ice', candidate: e.candidate.candidate, sdpMLineIndex: e.candidate.sdpMLineIndex || 0 }); };
  pc.onconnectionstatechange = () => { state.ice = pc.connectionState; setPill('ice', `WebRTC: ${pc.connectionState}`, pc.connectionState === 'connected' ? 'ok' : (pc.connectionState === 'failed' ? 'bad' : '')); };
  pc.ontrack = (e) => onRemoteTrack(e.streams[0] || new MediaStream([e.track]));
  await pc.setRemoteDescription({ type: 'offer', sdp });
  try {
    state.micStream = state.micStream || await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
    for (const track of state.micStream.getAudioTracks()) pc.addTrack(track, state.micStream);
    meterFor('mic', state.ctx.createMediaStreamSource(state.micStream));
  } catch (err) {
    showError(`no microphone (${err.name}): typed questions only`);
    setMode('type');
  }
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  $('stop').disabled = false;
}

function onRemoteTrack(stream) {
  state.remoteStream = stream;
  // Chrome only feeds a remote WebRTC stream to Web Audio while a media element plays it.
  const audio = $('remote-audio') || Object.assign(document.createElement('audio'), { id: 'remote-audio', autoplay: true });
  audio.srcObject = stream;
  document.body.appendChild(audio);
  const source = state.ctx.createMediaStreamSource(stream);
  meterFor('answer', source);
  source.connect(state.recorder);
}

function hangUp() {
  if (state.pc) state.pc.close();
  state.pc = null;
  if (state.ws) state.ws.close();
  setPill('ice', 'WebRTC: closed', '');
  $('stop').disabled = true;
  setTimeout(() => { connect(); $('start').disabled = false; }, 300);
}

setInterval(async () => {
  if (!state.pc) return;
  const stats = await state.pc.getStats();
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      state.rtc.packetsReceived = r.packetsReceived; state.rtc.bytesReceived = r.bytesReceived;
      state.rtc.jitter = r.jitter; state.rtc.packetsLost = r.packetsLost;
    }
    if (r.type === 'outbound-rtp' && r.kind === 'audio') state.rtc.packetsSent = r.packetsSent;
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
      const remote = stats.get(r.remoteCandidateId);  // the server's address the media uses
      if (remote) state.rtc.remoteAddress = remote.address || remote.ip;
    }
  });
  const s = state.rtc;
  $('rtc-stats').textContent = `received ${s.packetsReceived} packets, ${(s.bytesReceived / 1024).toFixed(1)} KiB` +
    ` (lost ${s.packetsLost || 0}, jitter ${((s.jitter || 0) * 1000).toFixed(0)} ms) · sent ${s.packetsSent} packets`;
}, 500);

// ---- Recording and levels ------------------------------------------------------------------
function setupRecorder() {
  if (state.recorder) return;
  const node = state.ctx.createScriptProcessor(4096, 1, 1);
  node.onaudioprocess = (e) => {
    const chunk = new Float32Array(e.inputBuffer.getChannelData(0));
    if (state.recording) { state.recording.chunks.push(chunk); return; }
    state.preroll.push(chunk); state.prerollSamples += chunk.length;
    while (state.prerollSamples - state.preroll[0].length > PREROLL_SECONDS * state.ctx.sampleRate)
      state.prerollSamples -= state.preroll.shift().length;
  };
  const mute = state.ctx.createGain(); mute.gain.value = 0;
  node.connect(mute); mute.connect(state.ctx.destination);
  state.recorder = node;
}

function meterFor(name, source) {
  const analyser = state.ctx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  state.analysers[name] = analyser;
}

function drawLevels() {
  for (const name of ['mic', 'answer']) {
    const canvas = $(`level-${name}`), g = canvas.getContext('2d');
    const a = state.analysers[name];
    let rms = 0;
    if (a) {
      const buf = new Float32Array(a.fftSize); a.getFloatTimeDomainData(buf);
      rms = Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length);
    }
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;
    const frac = Math.max(0, Math.min(1, (db + 60) / 60));
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = frac > 0.9 ? '#b4413a' : '#2f8a57';
    g.fillRect(0, 0, canvas.width * frac, canvas.height);
  }
  requestAnimationFrame(drawLevels);
}

// ---- Turns: transcript, waveforms, debug -----------------------------------------------------
function newTurn(user) {
  const turn = { user, answer: { text: '', textDone: false, audio: null, reason: null }, debug: null };
  turn.userEl = bubble('user', user.mode === 'text' ? 'You' : 'You (speech)', user.mode === 'text' ? user.text : '(speech)');
  turn.answerEl = bubble('assistant pending', 'GLM-4-Voice', '');
  state.turns.push(turn);
  if (user.samples) addWave(turn.userEl, user.samples, user.rate);
  return turn;
}
function turnAt(index) {
  while (state.turns.length <= index) newTurn({ mode: 'speech' });
  return state.turns[index];
}

function onUserTurn(m) {
  const bytes = Uint8Array.from(atob(m.pcm16), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const samples = Float32Array.from(pcm, (v) => v / 32768);
  newTurn({ mode: 'speech', samples, rate: m.rate, seconds: samples.length / m.rate });
}

function onAnswerText(text) {
  const turn = turnAt(state.textTurn);
  turn.answer.text += text;
  turn.answerEl.querySelector('.text').textContent = turn.answer.text;
  scrollDown();
}
function onTextEnd(reason) {
  const turn = turnAt(state.textTurn++);
  turn.answer.textDone = true; turn.answer.reason = reason;
  if (!turn.answer.audioPending) turn.answerEl.classList.remove('pending');
}

function onAnswerStart() {
  if (state.recording && state.recording.end) finishRecording();  // the previous one's tail
  if (state.recording || !state.ctx) return;
  state.recording = { turn: state.audioTurn, chunks: state.preroll.slice(), end: null, timer: 0 };
  turnAt(state.audioTurn).answer.audioPending = true;
  state.preroll = []; state.prerollSamples = 0;
}
function onAnswerEnd(m) {
  const index = state.audioTurn++;
  const rec = state.recording;
  if (!rec || rec.turn !== index || rec.end) {  // an answer without audio
    const turn = turnAt(index);
    turn.answer.audio = { seconds: 0, rms: 0, peak: 0, reason: m.reason, sentSeconds: m.audio_seconds };
    if (turn.answer.textDone) turn.answerEl.classList.remove('pending');
    return;
  }
  rec.end = m;
  rec.timer = setTimeout(finishRecording, ANSWER_TAIL_MS);  // what the jitter buffer still holds
}
function finishRecording() {
  const rec = state.recording;
  if (!rec) return;
  clearTimeout(rec.timer);
  state.recording = null;
  const turn = turnAt(rec.turn), m = rec.end || {};
  const n = rec.chunks.reduce((s, c) => s + c.length, 0);
  const samples = new Float32Array(n);
  let o = 0; for (const c of rec.chunks) { samples.set(c, o); o += c.length; }
  let sum = 0, peak = 0; for (const v of samples) { sum += v * v; peak = Math.max(peak, Math.abs(v)); }
  turn.answer.audio = { seconds: n / state.ctx.sampleRate, rms: n ? Math.sqrt(sum / n) : 0, peak, reason: m.reason,
    sentSeconds: m.audio_seconds, sentWallSeconds: m.wall_seconds };
  turn.answer.audioPending = false;
  if (turn.answer.textDone) turn.answerEl.classList.remove('pending');
  addWave(turn.answerEl, samples, state.ctx.sampleRate);
}

function onTurnDebug(m) {
  const turn = turnAt(state.debugTurn++);
  turn.debug = m;
  if (typeof m.text === 'string' && m.text) { turn.answer.text = m.text; turn.answerEl.querySelector('.text').textContent = m.text; }
  const el = document.createElement('div');
  el.className = 'turn';
  const ids = (a) => (Array.isArray(a) ? a.join(' ') : '');
  el.innerHTML = `<b>Turn ${m.turn ?? state.debugTurn}</b> · ${esc(turn.user.mode === 'text' ? 'typed' : 'speech')} · reason <b>${esc(m.reason)}</b><br>` +
    `prompt ${m['prompt-tokens']} tokens, generated ${m['generated-tokens']} (${m['speech-tokens']} speech), ` +
    `prefill ${Number(m['prefill-ms']).toFixed(1)} ms, ${Number(m['decode-ms-per-token']).toFixed(2)} ms/token` +
    `<div>input ids (${(m['input-ids'] || []).length})</div><div class="ids">${esc(ids(m['input-ids']))}</div>` +
    `<div>output ids (${(m['completion-ids'] || []).length})</div><div class="ids">${esc(ids(m['completion-ids']))}</div>` +
    `<div>input: ${esc(turn.user.mode === 'text' ? turn.user.text : '(speech)')}</div><div>output: ${esc(m.text)}</div>`;
  $('debug').prepend(el);
}

function bubble(cls, who, text) {
  const hint = document.querySelector('#transcript .hint'); if (hint) hint.remove();
  const el = document.createElement('div');
  el.className = `msg ${cls}`;
  el.innerHTML = `<div class="who">${esc(who)}</div><div class="text"></div>`;
  el.querySelector('.text').textContent = text;
  $('transcript').appendChild(el);
  scrollDown();
  return el;
}

function addWave(el, samples, rate) {
  const row = document.createElement('div'); row.className = 'wave';
  const canvas = document.createElement('canvas'); canvas.width = 520; canvas.height = 88;
  const play = document.createElement('button'); play.textContent = '▶ Play';
  const info = document.createElement('span'); info.textContent = `${(samples.length / rate).toFixed(1)} s`;
  row.append(canvas, play, info); el.appendChild(row);
  const g = canvas.getContext('2d'), w = canvas.width, h = canvas.height, step = Math.max(1, Math.floor(samples.length / w));
  g.fillStyle = '#2d5bd0';
  for (let x = 0; x < w; x++) {
    let lo = 0, hi = 0;
    for (let i = x * step; i < Math.min(samples.length, (x + 1) * step); i++) { lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]); }
    g.fillRect(x, h / 2 - hi * h / 2, 1, Math.max(1, (hi - lo) * h / 2));
  }
  play.onclick = () => {
    if (!samples.length) return;
    const buffer = state.ctx.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const src = state.ctx.createBufferSource(); src.buffer = buffer; src.connect(state.ctx.destination); src.start();
  };
  scrollDown();
}

// ---- Controls ----------------------------------------------------------------------------------
function controls() {
  return {
    mode: document.querySelector('input[name=mode]:checked').value,
    temperature: Number($('temperature').value), top_p: Number($('top_p').value),
    max_new_tokens: Math.max(1, Math.round(Number($('max_new_tokens').value) || 1)),
    instruction: $('instruction').value, barge_in: $('barge_in').checked,
  };
}
function sendControls() { send({ type: 'controls', controls: controls() }); }
function setMode(mode) { document.querySelector(`input[name=mode][value=${mode}]`).checked = true; sendControls(); }

function sendText(text) {
  text = text.trim();
  if (!text) return;
  newTurn({ mode: 'text', text });
  send({ type: 'text', text });
}

function setModels(m) {
  state.models = m;
  renderModels();
}
function addProgress(p) {
  if (p.code !== 'load-model') return;
  state.models.steps = (state.models.steps || []).concat([p]);
  renderModels();
}
function renderModels() {
  const m = state.models, last = {};
  for (const p of m.steps || []) last[p.element] = p;
  const rows = Object.values(last).map((p) => `<div class="${p.kind === 'complete' ? 'done' : (p.kind === 'error' ? 'err' : '')}">${esc(p.element)}: ${p.kind === 'complete' ? '✓ loaded' : (p.kind === 'start' ? 'loading…' : esc(p.kind))} <small>${esc(p.text)}</small></div>`);
  $('models').innerHTML = `<div><b>${esc(m.state)}</b>${m.tiny ? ' (tiny random models)' : ''}</div>` + rows.join('') +
    (m.error ? `<div class="err">${esc(m.error)}</div>` : '');
}

// ---- Small helpers -------------------------------------------------------------------------------
function setPill(id, text, cls) { const el = $(id); el.textContent = text; el.className = `pill ${cls || ''}`; }
function showError(text) { state.errors.push(text); const el = $('errors'); el.hidden = false; el.textContent = state.errors.slice(-3).join('\n'); }
function note(text) { bubble('assistant', 'system', text); }
function esc(s) { return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c])); }
function scrollDown() { const t = $('transcript'); t.scrollTop = t.scrollHeight; }

$('start').onclick = () => start().catch((err) => showError(`start: ${err}`));
$('stop').onclick = hangUp;
$('reset').onclick = () => send({ type: 'reset' });
$('typed').onsubmit = (e) => { e.preventDefault(); sendText($('question').value); $('question').value = ''; };
for (const id of ['temperature', 'top_p']) $(id).oninput = () => { $(`${id}-v`).textContent = $(id).value; };
for (const id of ['temperature', 'top_p', 'max_new_tokens', 'instruction', 'barge_in']) $(id).onchange = sendControls;
document.querySelectorAll('input[name=mode]').forEach((r) => { r.onchange = sendControls; });
connect();
requestAnimationFrame(drawLevels);

// For tests/web: a plain snapshot of what the page shows.
window.glmvoiceTest = {
  start, sendText, setMode, reset: () => send({ type: 'reset' }),
  snapshot: () => ({
    connected: state.connected, session: state.session, ice: state.ice, tiny: state.tiny,
    models: state.models.state, errors: state.errors, rtc: state.rtc, received: state.received,
    turns: state.turns.map((t) => ({
      user: { mode: t.user.mode, text: t.user.text || null, seconds: t.user.seconds || 0 },
      answer: { text: t.answer.text, textDone: t.answer.textDone, reason: t.answer.reason, audio: t.answer.audio },
      debug: t.debug ? { inputIds: t.debug['input-ids'] || [], completionIds: t.debug['completion-ids'] || [], reason: t.debug.reason } : null,
    })),
  }),
};

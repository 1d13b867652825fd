// The "track my ride" page: one driver, from /ws with the link's token, drawn on a canvas
// centred on it (no basemap to download); the rider taps to drop a pin and sees the
// distance and an ETA at the driver's current speed.
"use strict";

const token = decodeURIComponent(location.pathname.replace(/^\/t\//, ""));
const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const METRES_PER_PX = 4;
let driver = null;
let pin = null;

// Metres east and north of (lat0, lon0), flat-earth: fine within a few kilometres.
function offset(lat0, lon0, lat, lon) {
  const k = 111320;
  return [(lon - lon0) * k * Math.cos((lat0 * Math.PI) / 180), (lat - lat0) * k];
}

function haversine(a, b) {
  const r = 6371008.8;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * r * Math.asin(Math.sqrt(h));
}

function draw() {
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#cfd6dc";
  for (let x = 0; x < w; x += 25) { ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke(); }
  for (let y = 0; y < h; y += 25) { ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke(); }
  if (!driver) return;
  if (pin) {
    const [dx, dy] = offset(driver.lat, driver.lon, pin.lat, pin.lon);
    const px = w / 2 + dx / METRES_PER_PX;
    const py = h / 2 - dy / METRES_PER_PX;
    ctx.fillStyle = "#b3261e";
    ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.fill();
    ctx.strokeStyle = "#b3261e";
    ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(w / 2, h / 2); ctx.lineTo(px, py); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.save();
  ctx.translate(w / 2, h / 2);
  ctx.rotate(((driver.heading || 0) * Math.PI) / 180);
  ctx.fillStyle = "#1a73e8";
  ctx.beginPath(); ctx.moveTo(0, -12); ctx.lineTo(8, 9); ctx.lineTo(0, 4); ctx.lineTo(-8, 9); ctx.closePath(); ctx.fill();
  ctx.restore();
}

function panel() {
  if (!driver) return;
  $("hint").textContent = "Tap to drop a pin where you are.";
  $("sh-id").textContent = driver.id;
  $("sh-speed").textContent = `${(driver.speed * 3.6).toFixed(0)} km/h`;
  $("sh-heading").textContent = `${Math.round(driver.heading)}°`;
  if (pin) {
    const d = haversine(driver, pin);
    $("sh-dist").textContent = d < 1000 ? `${Math.round(d)} m` : `${(d / 1000).toFixed(1)} km`;
    const minutes = d / Math.max(driver.speed, 1) / 60;
    $("sh-eta").textContent = minutes < 1 ? "under a minute" : `${Math.round(minutes)} min`;
  }
}

canvas.addEventListener("click", (e) => {
  if (!driver) return;
  const r = canvas.getBoundingClientRect();
  const x = ((e.clientX - r.left) / r.width) * canvas.width - canvas.width / 2;
  const y = canvas.height / 2 - ((e.clientY - r.top) / r.height) * canvas.height;
  const k = 111320;
  pin = {
    lat: driver.lat + (y * METRES_PER_PX) / k,
    lon: driver.lon + (x * METRES_PER_PX) / (k * Math.cos((driver.lat * Math.PI) / 180)),
  };
  draw();
  panel();
});

function over() {
  $("over").hidden = false;
  $("hint").textContent = "";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type !== "batch") return;
    for (const p of msg.positions || []) driver = p;
    if ((msg.gone || []).length && !(msg.positions || []).length) $("hint").textContent = "Your driver is offline.";
    document.body.dataset.driver = driver ? driver.id : "";
    draw();
    panel();
  };
  // The bridge closes the socket when the link expires; a refused one never opens.
  ws.onclose = () => over();
}

draw();
connect();

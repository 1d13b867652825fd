// fleetcast live map: the basemap (Leaflet, vector, offline), every driver on one canvas,
// smooth motion between fixes, a status panel, following a driver (its trail from the
// history API), a rider's pin and ETA, per-cell counts when the view holds too many
// drivers (cells.js), replay of a past window (replay.js).
// Talks to the bridge over /ws (protocol in dashboard/src/protocol.rs and README.md).
'use strict';

(async function main() {
  const COLORS = { available: '#2e7d32', to_pickup: '#ef6c00', on_trip: '#1565c0' };
  const STALE = '#9e9e9e';
  const JITTER_M = 2;      // moves under this are GPS noise: ignored
  const SNAP_M = 150;      // jumps over this are drawn at once, not eased
  const EASE_MS = 1000;    // a move is eased over about one fix interval
  const HIDDEN_GRACE_MS = 10000;
  const TRAIL = 3600;       // points of a followed driver's trail (an hour at 1 fix/s)
  const TRAIL_MIN = 15;     // minutes of history a followed driver's trail starts with

  const $ = (id) => document.getElementById(id);
  const cfg = await (await fetch('/config.json')).json();
  const basemap = await (await fetch('/basemap.geojson')).json();

  // --- map and basemap -----------------------------------------------------------------
  const map = L.map('map', { preferCanvas: true, zoomAnimation: false, fadeAnimation: false, zoomSnap: 0.25, zoomDelta: 0.5 });
  const renderer = L.canvas({ padding: 0.3 });
  if (cfg.tiles) {
    L.tileLayer(cfg.tiles, { maxZoom: 19 }).addTo(map);
  }
  const styles = {
    water: { stroke: false, fillColor: '#aad3df', fillOpacity: 1 },
    coast: { color: '#aad3df', weight: 4 },
    green: { stroke: false, fillColor: '#cdebb0', fillOpacity: 1 },
    building: { color: '#c4b6ab', weight: 0.5, fillColor: '#d9d0c9', fillOpacity: 1 },
  };
  const roads = { major: 5, street: 3, minor: 2, path: 1 };
  L.geoJSON(basemap, {
    renderer,
    interactive: false,
    style: (f) => {
      const p = f.properties;
      if (p.k === 'road') {
        return { color: p.c === 'path' ? '#f7f7f7' : '#ffffff', weight: roads[p.c] || 2, opacity: 1 };
      }
      return styles[p.k] || { stroke: false };
    },
  }).addTo(map);
  map.attributionControl.setPrefix('<a href="/vendor/leaflet/LICENSE">Leaflet</a>');
  map.attributionControl.addAttribution(cfg.attribution);
  const [w, s, e, n] = basemap.bounds;
  map.fitBounds([[s, w], [n, e]]);

  // --- drivers -----------------------------------------------------------------------------
  // Positions are kept in Web Mercator units (0..1), so a frame only scales and shifts.
  const mx = (lon) => (lon + 180) / 360;
  const my = (lat) => 0.5 - Math.log(Math.tan(Math.PI / 4 + (lat * Math.PI) / 360)) / (2 * Math.PI);
  const metres = (lat1, lon1, lat2, lon2) => {
    const r = 6371008.8, toRad = Math.PI / 180;
    const dlat = (lat2 - lat1) * toRad, dlon = (lon2 - lon1) * toRad;
    const a = Math.sin(dlat / 2) ** 2 + Math.cos(lat1 * toRad) * Math.cos(lat2 * toRad) * Math.sin(dlon / 2) ** 2;
    return 2 * r * Math.asin(Math.sqrt(a));
  };
  const drivers = new Map();
  let followed = null;
  // The followed driver's trail, [lat, lon, ts] oldest first: its history, then live fixes.
  let trail = [];
  // The latest cells message while the view is aggregated, else null.
  let cells = null;
  let pin = null;
  let lastEta = null;

  function place(d, now) {
    const k = d.dur > 0 ? Math.min(1, (now - d.t0) / d.dur) : 1;
    const e = k * k * (3 - 2 * k); // smoothstep
    d.x = d.fx + (d.tx - d.fx) * e;
    d.y = d.fy + (d.ty - d.fy) * e;
  }

  function upsert(loc, now) {
    let d = drivers.get(loc.id);
    if (!d) {
      d = { id: loc.id, fx: mx(loc.lon), fy: my(loc.lat), tx: mx(loc.lon), ty: my(loc.lat), t0: now, dur: 0, trail: [] };
      d.lat = loc.lat; d.lon = loc.lon;
      drivers.set(loc.id, d);
    } else {
      const moved = metres(d.lat, d.lon, loc.lat, loc.lon);
      if (moved >= JITTER_M) {
        place(d, now);
        if (moved > SNAP_M) {
          d.fx = d.tx = mx(loc.lon); d.fy = d.ty = my(loc.lat); d.dur = 0;
        } else {
          d.fx = d.x; d.fy = d.y; d.tx = mx(loc.lon); d.ty = my(loc.lat); d.t0 = now; d.dur = EASE_MS;
        }
        d.lat = loc.lat; d.lon = loc.lon;
      }
    }
    d.status = loc.status; d.speed = loc.speed; d.seq = loc.seq; d.ts = loc.ts;
    d.seen = Date.now(); d.stale = false;
    d.bucket = Math.round((((loc.heading % 360) + 360) % 360) / (360 / BUCKETS)) % BUCKETS;
    if (followed === d.id) {
      d.trail = trail;
      const lastTs = trail.length ? trail[trail.length - 1][2] : 0;
      if (loc.ts > lastTs) trail.push([loc.lat, loc.lon, loc.ts]);
      if (trail.length > TRAIL) trail.shift();
    }
  }

  // --- drawing: one canvas over the map, one path per colour -------------------------------
  const canvas = document.createElement('canvas');
  canvas.id = 'drivers';
  map.getContainer().appendChild(canvas);
  const ctx = canvas.getContext('2d');
  let frames = 0, fps = 0, fpsSince = performance.now(), shown = 0;

  function resize() {
    const size = map.getSize(), ratio = window.devicePixelRatio || 1;
    canvas.width = size.x * ratio; canvas.height = size.y * ratio;
    canvas.style.width = size.x + 'px'; canvas.style.height = size.y + 'px';
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }
  map.on('resize', resize);
  resize();

  const cost = { frameMs: 0, batchMs: 0, batchPositions: 0 };
  // Drivers are stamped straight into a pixel buffer: one putImageData a frame instead of
  // 20,000 path fills or blits, which software rendering cannot do at 30 frames/s
  // (measured: one 20,000-triangle path 1.6 s a frame, 20,000 drawImage 75 ms).
  const BUCKETS = 32;
  const rgba = (hex, k = 1) => {
    const v = parseInt(hex.slice(1), 16);
    const mix = (c) => Math.round(c * k + 255 * (1 - k));
    return (0xff000000 | (mix(v & 0xff) << 16) | (mix((v >> 8) & 0xff) << 8) | mix(v >> 16)) >>> 0;
  };
  const PIXEL = {
    stale: rgba(STALE, 0.55),
    available: rgba(COLORS.available),
    to_pickup: rgba(COLORS.to_pickup),
    on_trip: rgba(COLORS.on_trip),
  };
  const masks = {};
  // For radius r (device pixels): per heading bucket, the pixel offsets of a triangle
  // pointing that way, as [dx0, dy0, dx1, dy1, ...].
  function mask(r) {
    if (masks[r]) return masks[r];
    const list = [];
    for (let b = 0; b < BUCKETS; b++) {
      const h = (b / BUCKETS) * 2 * Math.PI, s = Math.sin(h), c = Math.cos(h);
      const v = [[s * r * 1.4, -c * r * 1.4], [-s * r * 0.8 - c * r * 0.8, c * r * 0.8 - s * r * 0.8], [-s * r * 0.8 + c * r * 0.8, c * r * 0.8 + s * r * 0.8]];
      const edge = (a, q, x, y) => (q[0] - a[0]) * (y - a[1]) - (q[1] - a[1]) * (x - a[0]);
      const out = [];
      const lim = Math.ceil(r * 1.5);
      for (let y = -lim; y <= lim; y++) {
        for (let x = -lim; x <= lim; x++) {
          const e0 = edge(v[0], v[1], x, y), e1 = edge(v[1], v[2], x, y), e2 = edge(v[2], v[0], x, y);
          if ((e0 >= 0 && e1 >= 0 && e2 >= 0) || (e0 <= 0 && e1 <= 0 && e2 <= 0)) out.push(x, y);
        }
      }
      list.push(Int32Array.from(out));
    }
    masks[r] = list;
    return list;
  }
  let image = null, pixels = null;

  const cellsLayer = window.FleetcastCells(COLORS);
  const params0 = new URLSearchParams(location.search);
  const replay = window.FleetcastReplay({
    map, mx, my, buckets: BUCKETS,
    token: params0.get('token') || sessionStorage.getItem('fleetcast-token'),
    onState: (st) => showReplay(st),
  });

  function frame(now) {
    const t0 = performance.now();
    replay.advance(now);
    const source = replay.state.active ? replay.state.drivers : drivers;
    const size = map.getSize();
    const scale = 256 * Math.pow(2, map.getZoom());
    const origin = map.project(map.containerPointToLatLng([0, 0]), map.getZoom());
    const r = map.getZoom() >= 16 ? 7 : 5;
    const groups = { available: [], to_pickup: [], on_trip: [], stale: [] };
    shown = 0;
    for (const d of source.values()) {
      if (d.hidden) continue;
      place(d, now);
      const x = d.x * scale - origin.x, y = d.y * scale - origin.y;
      d.sx = x; d.sy = y;
      if (x < -10 || y < -10 || x > size.x + 10 || y > size.y + 10) continue;
      shown++;
      (d.stale ? groups.stale : groups[d.status] || groups.available).push(d);
    }
    const ratio = window.devicePixelRatio || 1;
    const W = canvas.width, H = canvas.height;
    if (!image || image.width !== W || image.height !== H) {
      image = ctx.createImageData(W, H);
      pixels = new Uint32Array(image.data.buffer);
    }
    pixels.fill(0);
    const shapes = mask(Math.round(r * ratio));
    for (const key of ['stale', 'available', 'to_pickup', 'on_trip']) {
      const colour = PIXEL[key];
      for (const d of groups[key]) {
        const m = shapes[d.bucket], x0 = (d.sx * ratio) | 0, y0 = (d.sy * ratio) | 0;
        for (let k = 0; k < m.length; k += 2) {
          const x = x0 + m[k], y = y0 + m[k + 1];
          if (x >= 0 && x < W && y >= 0 && y < H) pixels[y * W + x] = colour;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    if (cells && !replay.state.active) cellsLayer.draw(ctx, cells, map, size, ratio);
    ctx.globalAlpha = 1;
    const f = followed && !replay.state.active && drivers.get(followed);
    if (f) {
      if (trail.length > 1) {
        ctx.beginPath();
        trail.forEach(([lat, lon], i) => {
          const x = mx(lon) * scale - origin.x, y = my(lat) * scale - origin.y;
          if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        });
        ctx.lineTo(f.sx, f.sy);
        ctx.strokeStyle = 'rgba(21,101,192,.7)'; ctx.lineWidth = 3; ctx.stroke();
      }
      ctx.beginPath(); ctx.arc(f.sx, f.sy, r + 6, 0, 2 * Math.PI);
      ctx.strokeStyle = '#000'; ctx.lineWidth = 2; ctx.stroke();
    }
    frames++;
    cost.frameMs = performance.now() - t0;
    if (now - fpsSince >= 1000) {
      fps = (frames * 1000) / (now - fpsSince); frames = 0; fpsSince = now;
      $('st-fps').textContent = fps.toFixed(0);
      $('st-shown').textContent = cells && !replay.state.active
        ? cells.drivers.toLocaleString() + ' in cells' : shown.toLocaleString();
      updateFollowPanel();
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  // --- the bridge ----------------------------------------------------------------------------
  let ws = null, retry = 500, hiddenTimer = null, wanted = true;
  const send = (m) => { if (ws && ws.readyState === 1) ws.send(JSON.stringify(m)); };
  const sendViewport = () => {
    const b = map.getBounds();
    send({ op: 'viewport', bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()] });
  };
  map.on('moveend', sendViewport);

  // With `serve --auth`, /ws needs a token (`fleetcast token`): opened as /?token=...,
  // kept for this tab only, and taken out of the address bar so it is not shared by copy.
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {
    sessionStorage.setItem('fleetcast-token', params.get('token'));
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  }
  const token = sessionStorage.getItem('fleetcast-token');
  let opened = false;

  function connect() {
    $('st-link').textContent = 'connecting';
    const query = token ? '?token=' + encodeURIComponent(token) : '';
    opened = false;
    ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws' + query);
    ws.onopen = () => {
      opened = true;
      retry = 500;
      $('st-link').textContent = 'live';
      sendViewport();
      if (followed) send({ op: 'follow', id: followed });
    };
    ws.onmessage = (ev) => {
      const t0 = performance.now();
      const m = JSON.parse(ev.data);
      if (m.type === 'fences') { showFences(m); return; }
      if (m.type === 'cells') { onCells(m); return; }
      if (m.type !== 'batch') return;
      // Positions again (zoomed in): the server sends every driver in view.
      cells = null;
      const now = performance.now();
      cost.batchPositions = m.positions.length;
      for (const loc of m.positions) upsert(loc, now);
      for (const g of m.gone) {
        if (g.reason === 'offline') drivers.delete(g.id);
        else { const d = drivers.get(g.id); if (d) d.stale = true; }
      }
      showStats(m.stats);
      cost.batchMs = performance.now() - t0;
    };
    ws.onclose = () => {
      ws = null;
      $('st-link').textContent = wanted ? 'reconnecting' : 'paused (page hidden)';
      // This attempt never opened: most likely refused (401, or an expired token). Say how
      // to get in rather than spin quietly.
      if (!opened && wanted) {
        $('st-link').textContent = token ? 'refused: token expired or invalid'
          : 'refused: this map needs ?token= from `fleetcast token`';
      }
      if (wanted) { setTimeout(connect, retry); retry = Math.min(retry * 2, 10000); }
    };
  }
  function showStats(st) {
    if (!st) return;
    $('st-online').textContent = st.online.toLocaleString();
    $('st-rate').textContent = st.msgs_per_s.toFixed(0);
    $('st-p50').textContent = st.p50_ms.toFixed(0) + ' ms';
    $('st-p99').textContent = st.p99_ms.toFixed(0) + ' ms';
  }

  // Too many drivers in view: the server sends cells; only the followed driver stays.
  function onCells(m) {
    if (!cells) for (const id of [...drivers.keys()]) if (id !== followed) drivers.delete(id);
    cells = m;
    if (m.follow) upsert(m.follow, performance.now());
    else if (followed && drivers.get(followed)) drivers.get(followed).stale = true;
    showStats(m.stats);
  }

  // --- replay: a past window of every driver in view --------------------------------------
  const fmtTime = (t) => new Date(t).toLocaleTimeString();
  function showReplay(st) {
    $('rp-play').textContent = st.active && st.playing ? 'Pause' : (st.active ? 'Play' : 'Replay');
    $('rp-live').disabled = !st.active;
    $('rp-time').disabled = !st.active;
    $('rp-state').textContent = st.loading ? 'loading' : st.error ? 'error: ' + st.error
      : st.active ? `${st.drivers.size.toLocaleString()} drivers${st.truncated ? ' (capped)' : ''}` : 'live';
  }
  $('rp-play').addEventListener('click', () => {
    if (replay.state.active) replay.toggle();
    else replay.start(Number($('rp-window').value), Number($('rp-speed').value));
  });
  $('rp-live').addEventListener('click', () => replay.stop());
  $('rp-speed').addEventListener('change', () => replay.setSpeed(Number($('rp-speed').value)));
  $('rp-time').addEventListener('input', () => {
    const st = replay.state;
    replay.seek(st.since + (st.until - st.since) * Number($('rp-time').value) / 1000);
  });
  setInterval(() => {
    const st = replay.state;
    if (!st.active) return;
    $('rp-time').value = String(Math.round(1000 * (st.t - st.since) / Math.max(1, st.until - st.since)));
    $('rp-clock').textContent = fmtTime(st.t);
    if (!st.playing) showReplay(st);
  }, 100);

  // --- geofences (serve --geofences): shapes with their live counts, the latest events ----
  const fenceLayer = L.layerGroup().addTo(map);
  const fenceCounts = new Map();
  function showFences(m) {
    fenceLayer.clearLayers();
    fenceCounts.clear();
    for (const f of m.fences) {
      fenceCounts.set(f.name, f.count);
      const shape = L.geoJSON(f.geometry, { style: { color: '#7b1fa2', weight: 2, fillOpacity: 0.08 } });
      shape.bindTooltip(`${f.name}: ${f.count}`, { permanent: true, direction: 'center', className: 'fence-label' });
      fenceLayer.addLayer(shape);
    }
    const list = $('fence-events');
    list.replaceChildren(...m.events.slice(-8).reverse().map((e) => {
      const li = document.createElement('li');
      const at = new Date(e.ts).toLocaleTimeString();
      li.textContent = `${at} ${e.id} ${e.event === 'enter' ? 'entered' : 'left'} ${e.fence}`;
      return li;
    }));
    $('fences').classList.toggle('hidden', m.fences.length === 0);
  }
  connect();

  // A hidden page gives its connection back after a grace period and starts again from
  // the latest positions when it is shown.
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      hiddenTimer = setTimeout(() => { wanted = false; if (ws) ws.close(); }, HIDDEN_GRACE_MS);
    } else {
      clearTimeout(hiddenTimer);
      if (!wanted) { wanted = true; drivers.clear(); connect(); }
    }
  });

  // --- following, search, the rider's pin ----------------------------------------------------
  // The followed driver's last minutes from the history API, before the live fixes.
  async function loadTrail(id) {
    const q = new URLSearchParams({ since: String(Date.now() - TRAIL_MIN * 60000) });
    if (token) q.set('token', token);
    try {
      const r = await fetch(`/api/drivers/${encodeURIComponent(id)}/track?${q}`);
      if (!r.ok || followed !== id) return;
      const f = await r.json();
      const g = f.geometry;
      const coords = !g ? [] : g.type === 'Point' ? [g.coordinates] : g.coordinates;
      const first = trail.length ? trail[0][2] : Infinity;
      const older = coords.map(([lon, lat], i) => [lat, lon, f.properties.times[i]]).filter((p) => p[2] < first);
      trail.unshift(...older.slice(-TRAIL));
      if (trail.length > TRAIL) trail.splice(0, trail.length - TRAIL);
    } catch (e) { /* live fixes still draw the trail */ }
  }

  function follow(id) {
    if (followed && drivers.get(followed)) drivers.get(followed).trail = [];
    followed = id;
    trail = [];
    const known = id && drivers.get(id);
    if (known) known.trail = trail;
    if (id) loadTrail(id);
    lastEta = null;
    send({ op: 'follow', id });
    $('follow').classList.toggle('hidden', !id);
    const d = id && drivers.get(id);
    if (d) map.panTo([d.lat, d.lon]);
    updateFollowPanel();
  }

  function updateFollowPanel() {
    const d = followed && drivers.get(followed);
    if (!followed) return;
    $('fl-id').textContent = followed;
    if (!d) { $('fl-status').textContent = 'not seen yet'; return; }
    $('fl-status').textContent = (d.stale ? 'stale, ' : '') + d.status.replace('_', ' ');
    $('fl-speed').textContent = (d.speed * 3.6).toFixed(0) + ' km/h';
    $('fl-seen').textContent = ((Date.now() - d.seen) / 1000).toFixed(0) + ' s ago';
    if (pin) {
      const ll = pin.getLatLng();
      const dist = metres(ll.lat, ll.lng, d.lat, d.lon);
      const eta = d.speed > 0.5 ? dist / d.speed : null;
      // Only significant changes move the numbers (10 m, 5 s), so they do not flicker.
      if (!lastEta || Math.abs(dist - lastEta.dist) > 10 || (eta && Math.abs(eta - (lastEta.eta || 0)) > 5) || !eta !== !lastEta.eta) {
        lastEta = { dist, eta };
        $('fl-dist').textContent = dist < 1000 ? dist.toFixed(0) + ' m' : (dist / 1000).toFixed(2) + ' km';
        $('fl-eta').textContent = eta ? (eta < 90 ? eta.toFixed(0) + ' s' : (eta / 60).toFixed(0) + ' min') : 'stopped';
      }
    }
  }

  let picking = false;
  $('pin').addEventListener('click', () => { picking = true; document.body.classList.add('picking'); });
  $('unfollow').addEventListener('click', () => follow(null));
  $('search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('search-id').value.trim();
    if (id) follow(id);
  });
  map.on('click', (ev) => {
    if (picking) {
      picking = false;
      document.body.classList.remove('picking');
      if (pin) pin.setLatLng(ev.latlng);
      else pin = L.circleMarker(ev.latlng, { radius: 8, color: '#000', fillColor: '#ffeb3b', fillOpacity: 1 }).addTo(map).bindTooltip('me');
      lastEta = null;
      updateFollowPanel();
      return;
    }
    // The nearest driver within 12 px.
    if (replay.state.active) return;
    let best = null, bestD = 144;
    for (const d of drivers.values()) {
      const dx = d.sx - ev.containerPoint.x, dy = d.sy - ev.containerPoint.y;
      const dd = dx * dx + dy * dy;
      if (dd < bestD) { best = d; bestD = dd; }
    }
    if (best) follow(best.id);
  });

  // For tests and benchmarks (and the curious, from the console).
  window.fleetcast = {
    map,
    drivers,
    fps: () => fps,
    cost: () => cost,
    shown: () => shown,
    follow,
    followed: () => followed,
    linkOpen: () => !!ws && ws.readyState === 1,
    fences: () => fenceCounts,
    cells: () => cells,
    trail: () => trail,
    replay,
    screenPoint: (id) => { const d = drivers.get(id); return d ? [d.sx, d.sy] : null; },
    dropPin: (lat, lon) => { picking = true; map.fire('click', { latlng: L.latLng(lat, lon), containerPoint: map.latLngToContainerPoint([lat, lon]) }); },
  };
})();

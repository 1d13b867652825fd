// fleetcast live map: replay. Fetches the drivers seen in the view during a chosen window
// from the history API (`GET /api/replay`), then plays it: a clock runs from the start of
// the window at x1..x60, the slider shows and sets it, and each frame places every driver
// between its two points around the clock. The live feed keeps running underneath and
// comes back with "Live".
'use strict';

window.FleetcastReplay = function FleetcastReplay({ map, token, mx, my, buckets, onState }) {
  const STATUS = ['available', 'to_pickup', 'on_trip'];
  const state = { active: false, loading: false, since: 0, until: 0, t: 0, speed: 10, playing: false, drivers: new Map(), error: null };
  let last = null;

  async function start(minutes, speed) {
    const until = Date.now();
    const since = until - minutes * 60000;
    const b = map.getBounds();
    // About 600 steps over the window: smooth enough, and bounded whatever its length.
    const step = Math.max(1000, Math.round((until - since) / 600));
    const q = new URLSearchParams({
      since: String(since), until: String(until), step_ms: String(step),
      bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].join(','),
    });
    if (token) q.set('token', token);
    state.loading = true; state.error = null; onState(state);
    try {
      const r = await fetch('/api/replay?' + q);
      if (!r.ok) throw new Error((await r.json()).message || r.statusText);
      const data = await r.json();
      state.drivers = new Map();
      for (const d of data.drivers) {
        if (!d.points.length) continue;
        state.drivers.set(d.id, { id: d.id, points: d.points, x: 0, y: 0, fx: 0, fy: 0, tx: 0, ty: 0, t0: 0, dur: 0, hidden: true, trail: [] });
      }
      Object.assign(state, { active: true, since: data.since, until: data.until, t: data.since, speed, playing: true, truncated: data.truncated });
    } catch (e) {
      state.error = String(e.message || e);
    }
    state.loading = false; last = null; onState(state);
  }

  // Places every replayed driver at the clock (called once a frame).
  function advance(now) {
    if (!state.active) return;
    if (state.playing && last !== null) {
      state.t = Math.min(state.until, state.t + (now - last) * state.speed);
      if (state.t >= state.until) state.playing = false;
    }
    last = now;
    const t = state.t;
    for (const d of state.drivers.values()) {
      const p = d.points;
      // Not yet seen, or gone for more than a minute: not drawn.
      if (t < p[0][0] || t > p[p.length - 1][0] + 60000) { d.hidden = true; continue; }
      let lo = 0, hi = p.length - 1;
      while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (p[mid][0] <= t) lo = mid; else hi = mid - 1; }
      const a = p[lo], b = p[Math.min(lo + 1, p.length - 1)];
      const k = b[0] > a[0] ? Math.min(1, Math.max(0, (t - a[0]) / (b[0] - a[0]))) : 0;
      const lat = a[1] + (b[1] - a[1]) * k, lon = a[2] + (b[2] - a[2]) * k;
      d.fx = d.tx = mx(lon); d.fy = d.ty = my(lat); d.dur = 0;
      d.lat = lat; d.lon = lon;
      d.status = STATUS[a[3]] || 'available';
      d.bucket = Math.round((((a[4] % 360) + 360) % 360) / (360 / buckets)) % buckets;
      d.hidden = false; d.stale = false;
    }
  }

  return {
    state,
    start,
    advance,
    seek(t) { state.t = Math.max(state.since, Math.min(state.until, t)); },
    setSpeed(s) { state.speed = s; },
    toggle() { if (state.t >= state.until) state.t = state.since; state.playing = !state.playing; last = null; onState(state); },
    stop() { state.active = false; state.playing = false; state.drivers = new Map(); onState(state); },
  };
};

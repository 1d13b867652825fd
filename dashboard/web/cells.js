// fleetcast live map: per-cell counts (the bridge's `cells` message, sent instead of
// positions when a view holds more than `aggregate_above` drivers) drawn as pie bubbles,
// one slice per status. The bubbles are drawn once per message or view change onto a
// canvas of their own; a frame only copies it, so the map keeps its frame rate whatever
// the number of cells.
'use strict';

window.FleetcastCells = function FleetcastCells(colors) {
  const layer = document.createElement('canvas');
  const lctx = layer.getContext('2d');
  let drawnFor = null; // [message, zoom, origin x, origin y, width, height]

  function render(m, map, size, ratio) {
    const zoom = map.getZoom();
    const origin = map.getPixelOrigin ? map.project(map.containerPointToLatLng([0, 0]), zoom) : { x: 0, y: 0 };
    const key = [m, zoom, Math.round(origin.x), Math.round(origin.y), size.x, size.y];
    if (drawnFor && key.every((v, i) => v === drawnFor[i])) return;
    drawnFor = key;
    layer.width = size.x * ratio; layer.height = size.y * ratio;
    lctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    lctx.clearRect(0, 0, size.x, size.y);
    lctx.font = '600 11px system-ui, sans-serif';
    lctx.textAlign = 'center'; lctx.textBaseline = 'middle';
    const order = [colors.available, colors.to_pickup, colors.on_trip];
    for (const [lat, lon, a, p, t] of m.cells) {
      const n = a + p + t;
      if (!n) continue;
      const pt = map.latLngToContainerPoint([lat, lon]);
      if (pt.x < -40 || pt.y < -40 || pt.x > size.x + 40 || pt.y > size.y + 40) continue;
      const r = Math.min(26, 5 + 3.2 * Math.log2(1 + n));
      let from = -Math.PI / 2;
      [a, p, t].forEach((k, i) => {
        if (!k) return;
        const to = from + (2 * Math.PI * k) / n;
        lctx.beginPath(); lctx.moveTo(pt.x, pt.y); lctx.arc(pt.x, pt.y, r, from, to); lctx.closePath();
        lctx.fillStyle = order[i]; lctx.globalAlpha = 0.78; lctx.fill();
        from = to;
      });
      lctx.globalAlpha = 1;
      lctx.beginPath(); lctx.arc(pt.x, pt.y, r, 0, 2 * Math.PI);
      lctx.strokeStyle = '#fff'; lctx.lineWidth = 1.5; lctx.stroke();
      if (r >= 10) {
        lctx.fillStyle = '#fff';
        lctx.fillText(n >= 1000 ? (n / 1000).toFixed(1) + 'k' : String(n), pt.x, pt.y);
      }
    }
  }

  return {
    // Draws the latest cells message `m` over the map on `ctx` (CSS pixels).
    draw(ctx, m, map, size, ratio) {
      render(m, map, size, ratio);
      ctx.save();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(layer, 0, 0);
      ctx.restore();
    },
  };
};

// Usage charts: a subchain's metered usage per hour (from its nodes' signed reports, summed over
// the nodes) against its plan: transactions per second, bytes stored, bytes served per second.
// Plain SVG, no library; each chart has a text summary for screen readers.

const SVG = "http://www.w3.org/2000/svg";

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// One bar chart of `values` (one per hour, oldest first) with a dashed line at `limit`.
function chart(title, values, limit, fmt) {
  const [w, h, pad] = [320, 120, 4];
  const peak = Math.max(0, ...values);
  // The plan's line is drawn when it is near the bars; far above them the bars get the scale.
  const lineShown = Boolean(limit) && limit <= 4 * peak;
  const top = lineShown ? Math.max(limit, peak) : Math.max(peak * 1.2, 1e-9);
  const fig = document.createElement("figure");
  fig.className = "chart";
  const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, role: "img" });
  const plan = limit ? `, plan ${fmt(limit)}${lineShown ? "" : " (far above)"}` : "";
  const summary = `${title}: peak ${fmt(peak)}${plan} over ${values.length} hours`;
  svg.setAttribute("aria-label", summary);
  const step = (w - 2 * pad) / Math.max(values.length, 1);
  values.forEach((v, i) => {
    const bh = ((h - 2 * pad) * v) / top;
    svg.append(el("rect", { x: pad + i * step + 1, y: h - pad - bh, width: Math.max(step - 2, 1), height: bh, class: "bar" }));
  });
  if (lineShown) {
    const y = h - pad - ((h - 2 * pad) * limit) / top;
    svg.append(el("line", { x1: pad, x2: w - pad, y1: y, y2: y, class: "limit" }));
  }
  const cap = document.createElement("figcaption");
  cap.textContent = summary;
  fig.append(svg, cap);
  return fig;
}

/** Renders `u` (GET /api/v1/subchains/{id}/usage) into `box`, and the plan into `planEl`. */
export function renderUsage(box, planEl, u) {
  const hours = [];
  for (let t = u.from; t < u.to; t += 3600) hours.push(t);
  const sum = (field, hour) => u.rows.filter((r) => r.hour === hour).reduce((a, r) => a + r[field], 0);
  const p = u.plan;
  planEl.textContent = p
    ? `Plan ${p.name}: ${p.tenancy}, ${p.rate} tx/s (burst ${p.burst}), ${bytes(p.storage)} stored, ${bytes(p.bandwidth)}/s served. ` +
      `Last 24 hours: ${u.totals.transactions} transactions, ${u.totals.refused} refused by quota.`
    : `No plan (no quotas). Last 24 hours: ${u.totals.transactions} transactions.`;
  box.replaceChildren(
    chart("Transactions per second", hours.map((t) => sum("transactions", t) / 3600), p && p.rate, (v) => `${v.toFixed(2)} tx/s`),
    chart("Storage", hours.map((t) => sum("bytes_stored", t)), p && p.storage, bytes),
    chart("Bandwidth", hours.map((t) => sum("bytes_served", t) / 3600), p && p.bandwidth, (v) => `${bytes(Math.round(v))}/s`),
  );
}

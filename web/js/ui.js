// Small DOM helpers shared by the pages.

/** Shows a message in a status box: kind is "ok", "bad" or "info". */
export function status(el, kind, text) {
  el.className = `status ${kind}`;
  el.textContent = text;
}

/** A table cell with text (never HTML) and an optional class. */
export function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

/** A small button with an accessible name. */
export function button(label, aria, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `small ${cls}`.trim();
  b.textContent = label;
  b.setAttribute("aria-label", aria);
  b.addEventListener("click", onClick);
  return b;
}

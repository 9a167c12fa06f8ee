// Calls to the CA's API. Errors carry the problem document's detail (RFC 9457), so pages can
// show the server's own words.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.type = problem.type || "";
  }
}

async function check(resp) {
  if (resp.ok) return resp;
  let problem = {};
  try { problem = await resp.json(); } catch { /* not a problem document */ }
  throw new ApiError(resp.status, problem);
}

export async function getJSON(path, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""));
  const url = q.toString() ? `${path}?${q}` : path;
  return (await check(await fetch(url, { credentials: "same-origin" }))).json();
}

export async function getText(path) {
  return (await check(await fetch(path, { credentials: "same-origin", cache: "no-store" }))).text();
}

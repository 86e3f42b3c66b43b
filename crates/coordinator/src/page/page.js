// What the job list and the job pages share: fetching the coordinator's JSON (the token
// travels in the page's cookie), and formatting.
"use strict";

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function seconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min`;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function stateBadge(state) {
  return el("span", { class: `state ${state}` }, state);
}

function progressBar(fraction) {
  const bar = el("span", { class: "bar", title: `${(fraction * 100).toFixed(1)} %` });
  const fill = el("span");
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  bar.append(fill);
  return bar;
}

function showError(e) {
  const p = document.getElementById("error");
  p.hidden = !e;
  p.textContent = e ? String(e.message || e) : "";
}

// Calls `render` now and every second until it returns true (nothing left to watch).
async function poll(render) {
  for (;;) {
    let done = false;
    try {
      done = await render();
      showError(null);
    } catch (e) {
      showError(e);
    }
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (done) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

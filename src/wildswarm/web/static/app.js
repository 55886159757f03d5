// wildswarm: small vanilla JS. Uploads with progress; live job status by polling the JSON API.
"use strict";

(function () {
  const POLL_MS = 2000;
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const when = (s) => (s ? s.replace("T", " ").slice(0, 19) + (/(\+00:00|Z)$/.test(s) ? " UTC" : "") : "–");
  const pct = (p) => Math.round(100 * (p || 0)) + "%";
  const statusText = (j) => (j.pending_publish ? "waiting for the queue" : j.status);
  // what a done job found, as the server's `found` filter writes it (web/__init__.py)
  const found = (j) => {
    if (j.animals === null || j.animals === undefined) return "–";
    if (j.animals === 0) return "no animals";
    const n = j.tracks || j.animals;
    const species = Object.entries(j.species || {});
    const named = species.slice(0, 3).map(([s, c]) => s + " " + c).join(", ") + (species.length > 3 ? ", …" : "");
    return n + (n === 1 ? " animal" : " animals") + (named ? " · " + named : "");
  };
  const humanBytes = (n) => {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i ? n.toFixed(1) + " " + units[i] : n + " bytes";
  };

  // --- upload page -------------------------------------------------------------------------
  function uploadPage() {
    const form = document.getElementById("upload-form");
    if (!form) return;
    const input = document.getElementById("files");
    const drop = document.getElementById("drop");
    const list = document.getElementById("queue");
    const button = document.getElementById("upload-button");
    const status = document.getElementById("upload-status");
    const maxBytes = Number(form.dataset.maxBytes || 0);
    const exts = (form.dataset.extensions || ".mp4").split(",").map((s) => s.trim().toLowerCase());
    let files = [];

    function show() {
      list.replaceChildren();
      files.forEach((item) => {
        const li = el("li");
        li.append(el("span", "fname", item.file.name), el("span", "muted", humanBytes(item.file.size)));
        item.bar = el("progress", "bar");
        item.bar.max = 1;
        item.bar.value = 0;
        item.msg = el("span", "msg " + (item.error ? "error" : ""), item.error || "ready");
        li.append(item.bar, item.msg);
        list.append(li);
      });
      status.textContent = files.length ? files.length + " file(s) chosen" : "";
    }

    function choose(fileList) {
      files = Array.from(fileList || []).map((file) => {
        const dot = file.name.lastIndexOf(".");
        const ext = dot >= 0 ? file.name.slice(dot).toLowerCase() : "";
        let error = "";
        if (!exts.includes(ext)) error = "Not an MP4 file (" + (ext || "no extension") + "): it will not be sent.";
        else if (maxBytes && file.size > maxBytes) error = "Larger than the limit of " + humanBytes(maxBytes) + ": it will not be sent.";
        else if (file.size === 0) error = "The file is empty: it will not be sent.";
        return { file, error };
      });
      show();
    }

    function send(item) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        const data = new FormData();
        for (const name of ["profile", "deployment", "recorded_at", "webhook"]) {
          const field = form.elements[name];
          if (field && field.value) data.append(name, field.value);
        }
        data.append("file", item.file, item.file.name);
        xhr.open("POST", form.dataset.api);
        xhr.setRequestHeader("X-CSRF-Token", csrf());
        xhr.setRequestHeader("Accept", "application/json");
        xhr.responseType = "json";
        xhr.upload.onprogress = (e) => {
          if (e.lengthComputable) {
            item.bar.value = e.loaded / e.total;
            item.msg.textContent = "uploading " + pct(e.loaded / e.total);
          }
        };
        xhr.onload = () => {
          const body = xhr.response || {};
          if (xhr.status === 200 || xhr.status === 201) {
            item.bar.value = 1;
            item.msg.className = "msg " + (body.result === "pending" ? "warn" : "ok");
            item.msg.textContent = body.message || "uploaded";
            resolve({ ok: true, job: body.job });
          } else {
            item.bar.classList.add("failed");
            item.msg.className = "msg error";
            item.msg.textContent = xhr.status === 401 ? "Your login has expired: reload the page and log in again."
              : (body.error || "refused (HTTP " + xhr.status + ")");
            resolve({ ok: false });
          }
        };
        xhr.onerror = () => {
          item.bar.classList.add("failed");
          item.msg.className = "msg error";
          item.msg.textContent = "The upload was cut off" + (maxBytes && item.file.size > maxBytes
            ? ": the file is over the limit." : ". Check the connection and try again.");
          resolve({ ok: false });
        };
        item.msg.className = "msg";
        item.msg.textContent = "uploading";
        xhr.send(data);
      });
    }

    input.addEventListener("change", () => choose(input.files));
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) choose(e.dataTransfer.files);
    });

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!files.length) choose(input.files);
      const todo = files.filter((f) => !f.error);
      if (!todo.length) {
        status.textContent = files.length ? "Nothing to upload: every file was refused." : "Choose one or more MP4 videos first.";
        return;
      }
      button.disabled = true;
      const jobs = [];
      let failed = files.length - todo.length;
      for (const item of todo) {
        status.textContent = "Uploading " + (jobs.length + failed + 1) + " of " + files.length + " …";
        const r = await send(item);
        if (r.ok) jobs.push(r.job); else failed++;
      }
      button.disabled = false;
      if (jobs.length && !failed) {
        window.location.assign(jobs.length === 1 ? jobs[0].links.page
          : form.dataset.jobs + "?new=" + jobs.map((j) => j.id).join(","));
        return;
      }
      status.replaceChildren(document.createTextNode(jobs.length + " uploaded, " + failed + " refused. "));
      if (jobs.length) {
        const a = el("a", "", "See the jobs");
        a.href = form.dataset.jobs + "?new=" + jobs.map((j) => j.id).join(",");
        status.append(a);
      }
    });
  }

  // --- polling -----------------------------------------------------------------------------
  // Once the login has expired (or was closed) every poll is refused with 401: the page stops polling and
  // says so at its top, where the server's messages go, rather than showing its last figures as current.
  // What it polls deleted (404: a job's page whose job was deleted) stops it the same way.
  const stopped = (text) => {
    const p = el("p", "flash error", text);
    p.id = "live-stopped";
    p.setAttribute("role", "alert");
    document.querySelector("main").prepend(p);
  };
  const expired = () => stopped("Your login has expired: this page is no longer updated. "
    + "Reload the page and log in again.");

  function poll(url, onData, goneText) {
    let timer = null;
    async function tick() {
      timer = null;
      if (!document.hidden) {
        try {
          const r = await fetch(typeof url === "function" ? url() : url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
          if (r.status === 401) { expired(); return; }
          if (r.status === 404 && goneText) { stopped(goneText); return; }
          if (r.ok && onData(await r.json()) === false) return;
        } catch (err) { /* the server is restarting: try again on the next tick */ }
      }
      timer = setTimeout(tick, POLL_MS);
    }
    timer = setTimeout(tick, POLL_MS);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && timer) { clearTimeout(timer); tick(); } });
  }

  // The jobs page asks only for what changed since its last poll (?since=<change number>): rows on the
  // page are updated in place, deleted jobs taken off; on the live first page, new jobs are added at the top.
  function jobsPage() {
    const table = document.getElementById("jobs");
    if (!table) return;
    const tbody = table.tBodies[0];
    const empty = document.getElementById("no-jobs");
    const stamp = document.getElementById("refreshed");
    const live = table.dataset.live === "yes";
    const limit = Number(table.dataset.limit || 50);
    const fresh = new Set((table.dataset.new || "").split(",").filter(Boolean));
    let seq = Number(table.dataset.seq || 0);
    const cell = (label, ...children) => {
      const td = el("td");
      td.dataset.label = label;
      td.append(...children);
      return td;
    };
    const row = (j) => {
      const tr = el("tr", fresh.has(j.id) ? "new" : "");
      tr.dataset.id = j.id;
      tr.dataset.created = j.created_at || "";
      const link = el("a", "", j.input_name);
      link.href = j.links.page;
      const label = el("span");
      label.append(link);
      if (j.untrained) label.append(" ", el("span", "tag warn", "untrained"));
      if (j.profile) label.append(" ", el("span", "tag", j.profile));
      const bar = el("progress", "bar");
      bar.max = 1;
      bar.value = j.progress;
      const frames = j.frames_total ? " · " + j.frames_done + "/" + j.frames_total : "";
      const pick = el("td", "pick");
      pick.dataset.label = "Select";
      const box = el("input");
      box.type = "checkbox";
      box.name = "job";
      box.value = j.id;
      box.setAttribute("form", "export-form");
      box.setAttribute("aria-label", "select " + j.input_name);
      pick.append(box);
      tr.append(pick, cell("Video", label), cell("Status", el("span", "status " + j.status, statusText(j))),
        cell("Progress", bar, el("small", "", pct(j.progress) + frames)),
        cell("Found", document.createTextNode(found(j))),
        cell("Node", document.createTextNode(j.node || "–")),
        cell("Created", document.createTextNode(when(j.created_at))),
        cell("Finished", document.createTextNode(when(j.finished_at))));
      return tr;
    };
    const url = () => table.dataset.api + "?since=" + seq;
    poll(url, (data) => {
      seq = data.seq;
      const rows = new Map(Array.from(tbody.rows).map((tr) => [tr.dataset.id, tr]));
      // oldest change first; each row goes where the server's newest-first listing puts it
      for (const j of data.jobs) {
        const old = rows.get(j.id);
        if (old) {
          const ticked = old.querySelector("input[name=job]:checked");   // a ticked job stays ticked
          const fresh = row(j);
          const box = fresh.querySelector("input[name=job]");
          if (ticked && box) box.checked = true;
          old.replaceWith(fresh);
        }
        else if (live) {
          // Not on the page: a job made since, or an older one further down the list that changed (a worker
          // started it, it was retried). The page is newest first, so it goes above the first row older than
          // it; one no newer than every row of a full page belongs to a later page and is left out (times are
          // to the second: a job of the same second as the last row is taken for an older one).
          const t = Date.parse(j.created_at);
          const below = Array.from(tbody.rows).find((tr) => Date.parse(tr.dataset.created) < t);
          if (below) tbody.insertBefore(row(j), below);
          else if (tbody.rows.length < limit) tbody.append(row(j));
        }
      }
      for (const id of data.deleted || []) rows.get(id)?.remove();    // deleted meanwhile (elsewhere)
      while (live && tbody.rows.length > limit) tbody.deleteRow(-1);
      empty.hidden = tbody.rows.length > 0;
      if (live || data.jobs.length) stamp.textContent = "Updated " + new Date().toLocaleTimeString() + " · every 2 seconds.";
    });
  }

  function jobPage() {
    const box = document.getElementById("job");
    if (!box) return;
    const initial = box.dataset.status;
    if (initial === "done" || initial === "failed" || initial === "cancelled") return;
    const set = (id, text) => { const e = document.getElementById(id); if (e) e.textContent = text; };
    poll(box.dataset.api, (j) => {
      const badge = document.getElementById("job-status");
      badge.className = "status " + j.status;
      badge.textContent = statusText(j);
      document.getElementById("job-bar").value = j.progress;
      set("job-progress", pct(j.progress) + (j.frames_total ? " · " + j.frames_done + " of " + j.frames_total + " frames" : ""));
      set("job-node", j.node || "–");
      set("job-started", when(j.started_at));
      set("job-finished", when(j.finished_at));
      set("job-attempts", String(j.attempts));
      if (j.status === "done" || j.status === "failed" || j.status === "cancelled") {
        window.location.reload();   // the results (or the retry button) are rendered by the server
        return false;
      }
      return true;
    }, "This job has been deleted: this page is no longer updated.");
  }

  document.addEventListener("DOMContentLoaded", () => { uploadPage(); jobsPage(); jobPage(); });
})();

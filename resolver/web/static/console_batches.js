// The console's batch upload (console_batches.html): post the chosen file with fetch()
// to /console/batches (the session's CSRF token in X-CSRF-Token), then poll the job's
// progress (counters only: ?results=false) until it ends, filling the progress bar, and
// read the line-by-line results once, when it has ended (up to 5,000 rows: not on every
// poll). Words
// come from the form's data- attributes, so the page's language is the script's.
"use strict";
(function () {
  var form = document.getElementById("upload");
  if (!form) { return; }
  var d = form.dataset;
  var problem = document.getElementById("upload-problem");
  var section = document.getElementById("job");
  var bar = document.getElementById("job-progress");
  var counts = document.getElementById("job-counts");
  var state = document.getElementById("job-state");
  var body = document.querySelector("#job-results tbody");
  var onlyProblems = document.getElementById("only-problems");
  var button = document.getElementById("upload-button");
  var POLL_MS = 1000;
  var last = null;

  function fail(text) {
    problem.textContent = text;
    problem.hidden = false;
    button.disabled = false;
  }

  function format(template, fields) {
    return template.replace(/\{(\w+)\}/g, function (m, name) {
      return name in fields ? String(fields[name]) : m;
    });
  }

  function kindOf(file) {
    var chosen = document.getElementById("format").value;
    if (chosen) { return chosen; }
    return /\.csv$/i.test(file.name) ? "csv" : "jsonl";
  }

  function cell(row, text, label, cls) {
    var td = document.createElement("td");
    td.textContent = text;  // never markup: the data is whatever the file held
    td.setAttribute("data-label", label);
    if (cls) { td.className = cls; }
    row.appendChild(td);
  }

  function showResults(job) {
    var labels = document.querySelectorAll("#job-results thead th");
    body.textContent = "";
    (job.results || []).forEach(function (r) {
      if (onlyProblems.checked && r.status === "ok") { return; }
      var tr = document.createElement("tr");
      tr.className = "result-" + r.status;
      tr.setAttribute("data-line", r.line);
      cell(tr, r.line, labels[0].textContent);
      cell(tr, r.handle, labels[1].textContent);
      cell(tr, d["result" + r.status.charAt(0).toUpperCase() + r.status.slice(1)] || r.status,
           labels[2].textContent, "status");
      cell(tr, r.message, labels[3].textContent);
      body.appendChild(tr);
    });
  }

  function show(job) {
    last = job;
    section.hidden = false;
    bar.max = Math.max(job.total, 1);
    bar.value = job.done;
    var key = "state" + job.state.charAt(0).toUpperCase() + job.state.slice(1);
    state.textContent = d[key] || job.state;
    state.setAttribute("data-state", job.state);
    counts.textContent = format(d.counts, job) + (job.message ? " — " + job.message : "");
    showResults(job);
  }

  function poll(id, results) {
    var url = "/console/batches/" + encodeURIComponent(id) + ".json";
    fetch(results ? url : url + "?results=false", {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (a) {
      if (!a.ok) { fail(a.body.message || "error"); return; }
      if (a.body.job.state === "running") {
        show(a.body.job);
        setTimeout(function () { poll(id, false); }, POLL_MS);
      } else if (!results) {
        poll(id, true);  // ended: its results, once
      } else {
        show(a.body.job);
        button.disabled = false;
      }
    }).catch(function (e) { fail(String(e)); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    problem.hidden = true;
    var file = document.getElementById("file").files[0];
    if (!file) { return; }
    button.disabled = true;
    var kind = kindOf(file);
    fetch("/console/batches?format=" + kind, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "X-CSRF-Token": d.csrf,
        "Content-Type": kind === "csv" ? "text/csv" : "application/x-ndjson",
        "Accept": "application/json"
      },
      body: file
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (a) {
      if (!a.ok) { fail(a.body.message || "error"); return; }
      show(a.body.job);
      poll(a.body.job.id, false);
    }).catch(function (e) { fail(String(e)); });
  });

  onlyProblems.addEventListener("change", function () { if (last) { showResults(last); } });

  if (d.shown) { poll(d.shown, false); }
}());

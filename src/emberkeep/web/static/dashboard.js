// The dashboard's only script (web/page.py): while a job runs, show its progress and
// reload the page when it ends. The page works without it (a meta refresh does the same).
"use strict";
(function () {
  const job = document.getElementById("job");
  if (!job || job.dataset.state !== "running") return;
  const progress = document.getElementById("job-progress");
  const human = (n) => {
    for (const unit of ["B", "KiB", "MiB", "GiB"]) {
      if (n < 1024 || unit === "GiB") return unit === "B" ? `${n} B` : `${n.toFixed(1)} ${unit}`;
      n /= 1024;
    }
  };
  const poll = async () => {
    try {
      const answer = await fetch("/api/job", { credentials: "same-origin", cache: "no-store" });
      const state = await answer.json();
      if (!state || state.id !== Number(job.dataset.id) || state.state !== "running") {
        location.reload();
        return;
      }
      if (progress) progress.textContent = `${state.files} files, ${human(state.bytes)} read`;
    } catch (e) {
      // the server restarting: try again
    }
    setTimeout(poll, 500);
  };
  setTimeout(poll, 300);
})();

// Schedule pages, progressive enhancement only: every page works without this file.
// - Booking and moving: changing the date range or room refreshes the free-slot
//   suggestions in place (the same view answers ?partial=1 with the fragment).
// - Calendars: one appointment's action panel open at a time; Escape closes it.
(function () {
  "use strict";

  function suggestions() {
    const search = document.getElementById("slot-search");
    const target = document.getElementById("slot-suggestions");
    if (!search || !target) return;
    const forms = ["slot-pick", "slot-manual"]
      .map((id) => document.getElementById(id))
      .filter(Boolean);
    let pending = null;

    function refresh() {
      const query = new URLSearchParams(new FormData(search));
      const pageUrl = window.location.pathname + "?" + query.toString();
      query.set("partial", "1");
      if (pending) pending.abort();
      pending = new AbortController();
      target.setAttribute("aria-busy", "true");
      target.classList.add("slots-loading");
      fetch(window.location.pathname + "?" + query.toString(), {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
        signal: pending.signal,
      })
        .then((response) => response.text().then((html) => ({ response, html })))
        .then(({ response, html }) => {
          if (!response.ok && response.status !== 400) throw new Error(response.statusText);
          target.innerHTML = html;
          // Keep the range on reload, and after a refused booking re-renders the page.
          window.history.replaceState(null, "", pageUrl);
          forms.forEach((form) => form.setAttribute("action", pageUrl));
        })
        .catch((error) => {
          if (error.name === "AbortError") return;
          target.innerHTML = "";
          const note = document.createElement("p");
          note.className = "error";
          note.textContent = "Could not load free slots; use Show free slots to try again.";
          target.append(note);
        })
        .finally(() => {
          target.removeAttribute("aria-busy");
          target.classList.remove("slots-loading");
        });
    }

    search.addEventListener("change", refresh);
    search.addEventListener("submit", (event) => {
      event.preventDefault();
      refresh();
    });
  }

  function calendarPanels() {
    const blocks = () => document.querySelectorAll("details.appt[open]");
    document.addEventListener(
      "toggle",
      (event) => {
        const opened = event.target;
        if (!(opened instanceof HTMLDetailsElement) || !opened.open) return;
        if (!opened.classList.contains("appt")) return;
        blocks().forEach((other) => {
          if (other !== opened) other.open = false;
        });
      },
      true,
    );
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      blocks().forEach((open) => {
        open.open = false;
        open.querySelector("summary").focus();
      });
    });
  }

  // Open the calendar where the work is: at the block named in the address (just booked,
  // moved or checked in), else at the day's first appointment.
  function calendarScroll() {
    const wrap = document.querySelector(".cal-wrap");
    if (!wrap) return;
    const named = location.hash.startsWith("#appt-") && document.getElementById(location.hash.slice(1));
    const block = named || wrap.querySelector("details.appt");
    if (!block) return;
    const cell = block.closest("td") || block;
    wrap.scrollTop = Math.max(0, cell.offsetTop - wrap.querySelector("thead").offsetHeight - 8);
    if (named) named.open = true;
  }

  suggestions();
  calendarPanels();
  calendarScroll();
})();

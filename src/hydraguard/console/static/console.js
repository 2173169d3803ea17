// The evidence graph: wheel to zoom, drag to pan, click an indicator to pick out the accounts that share it.
(function () {
  const svg = document.getElementById("evidence-graph");
  if (!svg) return;
  const view = svg.viewBox.baseVal;
  let drag = null;
  svg.addEventListener("wheel", (event) => {
    event.preventDefault();
    const scale = event.deltaY > 0 ? 1.15 : 1 / 1.15;
    const box = svg.getBoundingClientRect();
    const x = view.x + (view.width * (event.clientX - box.left)) / box.width;
    const y = view.y + (view.height * (event.clientY - box.top)) / box.height;
    view.x = x - (x - view.x) * scale;
    view.y = y - (y - view.y) * scale;
    view.width *= scale;
    view.height *= scale;
  });
  svg.addEventListener("mousedown", (event) => { drag = { x: event.clientX, y: event.clientY }; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const box = svg.getBoundingClientRect();
    view.x -= ((event.clientX - drag.x) * view.width) / box.width;
    view.y -= ((event.clientY - drag.y) * view.height) / box.height;
    drag = { x: event.clientX, y: event.clientY };
  });
  let picked = null;
  svg.querySelectorAll(".hub").forEach((hub) => {
    hub.addEventListener("click", () => {
      const node = hub.dataset.node;
      picked = picked === node ? null : node;
      const linked = new Set();
      svg.querySelectorAll(".edge").forEach((edge) => {
        const on = picked !== null && edge.dataset.hub === picked;
        edge.classList.toggle("lit", on);
        edge.classList.toggle("dim", picked !== null && !on);
        if (on) linked.add(edge.dataset.member);
      });
      svg.querySelectorAll(".account").forEach((dot) => {
        dot.classList.toggle("dim", picked !== null && !linked.has(dot.dataset.node));
      });
    });
  });
})();

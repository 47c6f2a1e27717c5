// Sortable tables: a click on a header button sorts the body by that column, again to reverse.
// Cells sort by their data-sort attribute when they have one (numbers), else by their text;
// empty values go last in either direction.
"use strict";

function sortValue(cell) {
  const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  if (raw === "" || raw === "–") return null;
  const number = Number(raw);
  return Number.isNaN(number) ? raw : number;
}

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function sortBy(table, column, ascending) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).map((row, index) => ({ row, index, value: sortValue(row.cells[column]) }));
  rows.sort((x, y) => {
    if (x.value === null || y.value === null) {
      return (x.value === null) - (y.value === null) || x.index - y.index;
    }
    return (ascending ? 1 : -1) * compareValues(x.value, y.value) || x.index - y.index;
  });
  rows.forEach(({ row }) => body.appendChild(row));
}

document.querySelectorAll("table.sortable").forEach((table) => {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, column) => {
    const button = th.querySelector("button");
    if (!button) return;
    button.addEventListener("click", () => {
      // First click sorts ascending, unless the column is already sorted ascending.
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      sortBy(table, column, ascending);
    });
  });
});

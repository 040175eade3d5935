// Render the maths that pymdownx.arithmatex (generic mode) wraps in .arithmatex elements
// as \( ... \) and \[ ... \], with the KaTeX copy under assets/katex (no network needed).
// A formula KaTeX cannot parse is shown in red with the error, never silently as raw LaTeX.
function renderMath() {
  document.querySelectorAll(".arithmatex").forEach(function (element) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(renderMath); // mkdocs-material: also after instant navigation
} else {
  document.addEventListener("DOMContentLoaded", renderMath);
}

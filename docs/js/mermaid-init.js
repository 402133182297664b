// Render the ```mermaid blocks (pymdownx.superfences puts them in <pre class="mermaid">).
mermaid.initialize({ startOnLoad: true });

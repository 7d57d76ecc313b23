// The floating thumbnail shown next to the cursor while pointing at a map (fed by plotly_hover).
const OFFSET = 16;

function card() {
  return document.getElementById("hover-card");
}

/** Show the image `src` with `caption` near the mouse event's position, kept inside the window. */
export function showCard(src, caption, mouse) {
  const box = card();
  const img = box.querySelector("img");
  if (!document.body.classList.contains("no-images") && img.getAttribute("src") !== src) img.src = src;
  box.querySelector(".caption").textContent = caption;
  box.style.display = "block";
  if (!mouse) return;
  const { width, height } = box.getBoundingClientRect();
  const x = mouse.clientX + OFFSET + width > window.innerWidth ? mouse.clientX - OFFSET - width : mouse.clientX + OFFSET;
  const y = Math.min(mouse.clientY + OFFSET, window.innerHeight - height - 4);
  box.style.left = `${Math.max(4, x)}px`;
  box.style.top = `${Math.max(4, y)}px`;
}

export function hideCard() {
  card().style.display = "none";
}

// The page state lives in the URL so that a view can be bookmarked and shared:
//   /?run=<id>[&color=class|logdet|lipschitz|correct|split][&proj=umap|pca][&split=test|train|all][&image=<id>]
//          [&nn=<UMAP n_neighbors>][&md=<UMAP min_dist>][&dim=3]
//   /?compare=<a>,<b>[&proj=…][&split=…]
//   /?sweep=<id>                 (a sweep: progress, runs, results)
//   /?tab=data|train|runs|sweeps (the workbench; runs: [&sort=-map_at_r][&group=config])

export function params() {
  return new URLSearchParams(window.location.search);
}

/** The query string of `search` with `changes` merged in: null, undefined or "" removes a key, anything else
 * replaces it (as its string); the other keys keep their order. Pure, so it is tested outside a browser. */
export function mergeQuery(search, changes) {
  const next = new URLSearchParams(search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") next.delete(key);
    else next.set(key, value);
  }
  return readable(next);
}

/** The query string of a fresh set of parameters (an object or [key, value] pairs). */
export function queryOf(newParams) {
  return readable(new URLSearchParams(newParams));
}

// Commas separate the ids of `compare=a,b` and `sel=…`: left unescaped so a shared link stays legible.
const readable = (search) => search.toString().replaceAll("%2C", ",");

/** Merge `changes` into the query string (see mergeQuery). `push` adds a history entry (navigation),
 * otherwise the current entry is replaced (a setting changed within a view). */
export function setParams(changes, { push = false } = {}) {
  const query = mergeQuery(window.location.search, changes);
  const url = `${window.location.pathname}${query ? `?${query}` : ""}`;
  if (push) window.history.pushState(null, "", url);
  else window.history.replaceState(null, "", url);
}

/** Navigate within the app to a fresh set of parameters and let the router redraw. */
export function navigate(newParams) {
  const query = queryOf(newParams);
  window.history.pushState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}`);
  window.dispatchEvent(new Event("popstate"));
}

/** An in-app link: a real <a href> (middle-click and copy work) that navigates without a reload. */
export function href(newParams) {
  const query = queryOf(newParams);
  return `./${query ? `?${query}` : ""}`;
}

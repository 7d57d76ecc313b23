// The page state in the URL (frontend/js/url.js): merging changes into a query string, building in-app links.
// Run with `node --test tests/js/` (tests/js/test_node.py runs it under pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import { href, mergeQuery, queryOf } from "../../frontend/js/url.js";

test("a change replaces its key and keeps the others in order", () => {
  assert.equal(mergeQuery("?run=abc&proj=umap&split=test", { proj: "pca" }), "run=abc&proj=pca&split=test");
  assert.equal(mergeQuery("run=abc", { color: "logdet" }), "run=abc&color=logdet");
});

test("null, undefined and the empty string remove a key; a missing key stays missing", () => {
  for (const gone of [null, undefined, ""]) {
    assert.equal(mergeQuery("?run=abc&image=7", { image: gone }), "run=abc");
    assert.equal(mergeQuery("?run=abc", { image: gone }), "run=abc");
  }
  assert.equal(mergeQuery("?image=7", { image: null }), "");
});

test("zero and false are values, not removals", () => {
  assert.equal(mergeQuery("", { image: 0, dim: false }), "image=0&dim=false");
});

test("commas stay legible (compare=a,b and sel=…), everything else is escaped and reads back", () => {
  const query = mergeQuery("?run=abc", { sel: [3, 14, 15].join(","), q: "a&b=c d/é,f" });
  assert.equal(query.split("&")[1], "sel=3,14,15");
  const back = new URLSearchParams(query);
  assert.equal(back.get("q"), "a&b=c d/é,f");
  assert.deepEqual(back.get("sel").split(",").map(Number), [3, 14, 15]);
  assert.equal(queryOf({ compare: "aaa,bbb", proj: "pca" }), "compare=aaa,bbb&proj=pca");
});

test("an in-app link is relative, with or without parameters", () => {
  assert.equal(href({ run: "abc", split: "all" }), "./?run=abc&split=all");
  assert.equal(href({ tab: "runs", sort: "-map_at_r" }), "./?tab=runs&sort=-map_at_r");
  assert.equal(href({}), "./");
});

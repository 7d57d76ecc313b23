// Align one 2-D map onto another (orthogonal Procrustes with uniform scale) using the images both show, so
// that two runs' maps are drawn in the same orientation. A projection's rotation, reflection and scale are
// arbitrary; only the arrangement carries information, so this changes nothing a user should read.

/**
 * Move map B onto map A. `a`, `b`: {x, y, image_id} typed arrays. Returns new {x, y} Float32Arrays for B, or
 * null when fewer than 3 images are shared (nothing to align on).
 */
export function alignTo(a, b) {
  const rowOfA = new Map(Array.from(a.image_id, (id, i) => [id, i]));
  const pairs = [];
  b.image_id.forEach((id, j) => { const i = rowOfA.get(id); if (i !== undefined) pairs.push([i, j]); });
  if (pairs.length < 3) return null;
  const mean = (xs, ys, pick) => {
    let sx = 0; let sy = 0;
    for (const p of pairs) { sx += xs[p[pick]]; sy += ys[p[pick]]; }
    return [sx / pairs.length, sy / pairs.length];
  };
  const [ax, ay] = mean(a.x, a.y, 0);
  const [bx, by] = mean(b.x, b.y, 1);
  // M = Bcᵀ Ac (2×2) and ‖Bc‖²; rows are points, the map is p ↦ s·p·R + t.
  let m11 = 0; let m12 = 0; let m21 = 0; let m22 = 0; let nb = 0;
  for (const [i, j] of pairs) {
    const u = b.x[j] - bx; const v = b.y[j] - by;
    const p = a.x[i] - ax; const q = a.y[i] - ay;
    m11 += u * p; m12 += u * q; m21 += v * p; m22 += v * q; nb += u * u + v * v;
  }
  if (nb === 0) return null;
  // Best rotation R = [[c, -s], [s, c]] maximises c(m11+m22) + s(m21−m12); best reflection
  // R = [[c, s], [s, −c]] maximises c(m11−m22) + s(m12+m21). Take whichever fits better.
  const rot = Math.hypot(m11 + m22, m21 - m12);
  const ref = Math.hypot(m11 - m22, m12 + m21);
  let r;
  if (rot >= ref) {
    const t = Math.atan2(m21 - m12, m11 + m22);
    r = [[Math.cos(t), -Math.sin(t)], [Math.sin(t), Math.cos(t)]];
  } else {
    const t = Math.atan2(m12 + m21, m11 - m22);
    r = [[Math.cos(t), Math.sin(t)], [Math.sin(t), -Math.cos(t)]];
  }
  const scale = Math.max(rot, ref) / nb;
  const x = new Float32Array(b.x.length);
  const y = new Float32Array(b.y.length);
  for (let j = 0; j < b.x.length; j += 1) {
    const u = b.x[j] - bx; const v = b.y[j] - by;
    x[j] = scale * (u * r[0][0] + v * r[1][0]) + ax;
    y[j] = scale * (u * r[0][1] + v * r[1][1]) + ay;
  }
  return { x, y };
}

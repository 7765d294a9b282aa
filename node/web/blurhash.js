// Blurhash decoder: paints the node's `blurhash` of a photo into a tiny canvas,
// shown (stretched and smooth) while the thumbnail loads. Algorithm as in
// https://github.com/woltapp/blurhash (base 83, DC + AC cosine components).

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~';

function decode83(text, start, end) {
  let value = 0;
  for (let index = start; index < end; index++) {
    const digit = DIGITS.indexOf(text[index]);
    if (digit < 0) throw new Error('not a blurhash');
    value = value * 83 + digit;
  }
  return value;
}

function srgbToLinear(value) {
  const x = value / 255;
  return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
}

function linearToSrgb(value) {
  const x = Math.max(0, Math.min(1, value));
  return x <= 0.0031308 ? Math.round(x * 12.92 * 255) : Math.round((1.055 * Math.pow(x, 1 / 2.4) - 0.055) * 255);
}

function signedSquare(value) {
  return Math.sign(value) * value * value;
}

/** RGBA pixels (`width` × `height`) of a blurhash; throws on a malformed one. */
export function decodeBlurhash(hash, width, height) {
  if (typeof hash !== 'string' || hash.length < 6) throw new Error('not a blurhash');
  const sizeFlag = decode83(hash, 0, 1);
  const componentsY = Math.floor(sizeFlag / 9) + 1;
  const componentsX = (sizeFlag % 9) + 1;
  if (hash.length !== 4 + 2 * componentsX * componentsY) throw new Error('not a blurhash');
  const maximum = (decode83(hash, 1, 2) + 1) / 166;
  const colors = [];
  const dc = decode83(hash, 2, 6);
  colors.push([srgbToLinear(dc >> 16), srgbToLinear((dc >> 8) & 255), srgbToLinear(dc & 255)]);
  for (let index = 1; index < componentsX * componentsY; index++) {
    const ac = decode83(hash, 4 + index * 2, 6 + index * 2);
    colors.push([
      signedSquare((Math.floor(ac / 361) - 9) / 9) * maximum,
      signedSquare(((Math.floor(ac / 19) % 19) - 9) / 9) * maximum,
      signedSquare(((ac % 19) - 9) / 9) * maximum,
    ]);
  }
  const pixels = new Uint8ClampedArray(width * height * 4);
  const cosX = new Float64Array(width * componentsX);
  for (let x = 0; x < width; x++) {
    for (let i = 0; i < componentsX; i++) cosX[x * componentsX + i] = Math.cos((Math.PI * x * i) / width);
  }
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0, g = 0, b = 0;
      for (let j = 0; j < componentsY; j++) {
        const cosY = Math.cos((Math.PI * y * j) / height);
        for (let i = 0; i < componentsX; i++) {
          const basis = cosX[x * componentsX + i] * cosY;
          const color = colors[i + j * componentsX];
          r += color[0] * basis;
          g += color[1] * basis;
          b += color[2] * basis;
        }
      }
      const offset = 4 * (x + y * width);
      pixels[offset] = linearToSrgb(r);
      pixels[offset + 1] = linearToSrgb(g);
      pixels[offset + 2] = linearToSrgb(b);
      pixels[offset + 3] = 255;
    }
  }
  return pixels;
}

/** Paints `hash` into `canvas` at a small size (CSS stretches it); false if it can't. */
export function paintBlurhash(canvas, hash, aspect = 1) {
  try {
    const width = aspect >= 1 ? 32 : Math.max(4, Math.round(32 * aspect));
    const height = aspect >= 1 ? Math.max(4, Math.round(32 / aspect)) : 32;
    const pixels = decodeBlurhash(hash, width, height);
    canvas.width = width;
    canvas.height = height;
    canvas.getContext('2d').putImageData(new ImageData(pixels, width, height), 0, 0);
    return true;
  } catch {
    return false;
  }
}

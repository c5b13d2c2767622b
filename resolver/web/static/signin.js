// Key-file sign-in for the idnode console: the Handle protocol's challenge, in the page.
// The private key is read and used here only; what is posted is a signature of the
// node's nonce and our cnonce (RSA PKCS#1 v1.5 with SHA-256, as HS_PUBKEY answers are).
// Accepts unencrypted PEM: PKCS#8 ("BEGIN PRIVATE KEY") or PKCS#1 ("BEGIN RSA PRIVATE
// KEY"). Not accepted: encrypted keys, DSA keys, HANDLE.NET's binary key files.
"use strict";
(function () {
  var form = document.getElementById("by-keyfile");
  if (!form) { return; }
  var problem = document.getElementById("k-problem");

  function fail(text) {
    problem.textContent = text;
    problem.hidden = false;
  }

  function b64(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s);
  }

  function unb64(text) {
    var s = atob(text.replace(/\s+/g, ""));
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  }

  function derLength(n) {
    if (n < 128) { return [n]; }
    var bytes = [];
    while (n > 0) { bytes.unshift(n & 255); n >>= 8; }
    return [128 | bytes.length].concat(bytes);
  }

  function der(tag, body) {
    var head = [tag].concat(derLength(body.length));
    var out = new Uint8Array(head.length + body.length);
    out.set(head, 0);
    out.set(body, head.length);
    return out;
  }

  function concat(parts) {
    var n = 0, i;
    for (i = 0; i < parts.length; i++) { n += parts[i].length; }
    var out = new Uint8Array(n), at = 0;
    for (i = 0; i < parts.length; i++) { out.set(parts[i], at); at += parts[i].length; }
    return out;
  }

  // PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (what WebCrypto imports).
  function pkcs1to8(pkcs1) {
    var version = new Uint8Array([2, 1, 0]);
    var rsaAlg = new Uint8Array([48, 13, 6, 9, 42, 134, 72, 134, 247, 13, 1, 1, 1, 5, 0]);
    return der(48, concat([version, rsaAlg, der(4, pkcs1)]));
  }

  function pkcs8Of(text) {
    if (/ENCRYPTED/.test(text)) { throw new Error("encrypted key files are not supported"); }
    var m = /-----BEGIN (RSA )?PRIVATE KEY-----([\s\S]*?)-----END \1?PRIVATE KEY-----/.exec(text);
    if (!m) { throw new Error("not a PEM RSA private key (PKCS#8 or PKCS#1)"); }
    var body = unb64(m[2]);
    return m[1] ? pkcs1to8(body) : body;
  }

  form.addEventListener("submit", function (event) {
    if (form.elements.signature.value) { return; }  // signed: let it go
    event.preventDefault();
    problem.hidden = true;
    var file = document.getElementById("k-file").files[0];
    if (!file) { fail("choose a key file"); return; }
    if (!window.crypto || !window.crypto.subtle) {
      fail("this page needs HTTPS (or localhost) for the browser's crypto");
      return;
    }
    var key;
    file.text().then(function (text) {
      return crypto.subtle.importKey(
        "pkcs8", pkcs8Of(text), { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["sign"]);
    }).then(function (k) {
      key = k;
      return fetch("/api/sessions", { method: "POST", credentials: "omit" });
    }).then(function (r) {
      if (!r.ok) { throw new Error("the node opened no session (" + r.status + ")"); }
      return r.json();
    }).then(function (session) {
      var cnonce = crypto.getRandomValues(new Uint8Array(16));
      form.elements.session.value = session.sessionId;
      form.elements.cnonce.value = b64(cnonce);
      return crypto.subtle.sign("RSASSA-PKCS1-v1_5", key, concat([unb64(session.nonce), cnonce]));
    }).then(function (signature) {
      form.elements.signature.value = b64(new Uint8Array(signature));
      form.submit();
    }).catch(function (err) {
      fail(String(err && err.message ? err.message : err));
    });
  });
})();

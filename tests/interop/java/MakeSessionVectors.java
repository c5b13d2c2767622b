// Writes tests/vectors/session-vectors.txt with the HANDLE.NET 7.3.1 library's own
// encoder: a SESSION_SETUP request, a request MAC'd with a session key (protocol 2.5, as
// the library sends them), and a response signed with an RSA server key. The unit tests
// (tests/unit/test_credentials.py) check idnode's codec against these bytes.
//
//   javac -cp '../shared/clients/cnri-7.3.1/*' -d build tests/interop/java/MakeSessionVectors.java
//   java -cp '../shared/clients/cnri-7.3.1/*:build' MakeSessionVectors > tests/vectors/session-vectors.txt

import java.math.BigInteger;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.spec.RSAPrivateCrtKeySpec;

import net.handle.hdllib.*;

public class MakeSessionVectors {
  static String hex(byte[] b) {
    StringBuilder sb = new StringBuilder();
    for (byte x : b) sb.append(String.format("%02x", x & 0xff));
    return sb.toString();
  }

  static byte[] b(String s) { return Util.encodeString(s); }

  public static void main(String[] a) throws Exception {
    System.out.println("# Session and credential vectors from the HANDLE.NET 7.3.1 library (tests/interop/java/MakeSessionVectors.java).");
    System.out.println("# Each \"== name\" line gives the facts; the next line is hex.");

    SessionSetupRequest setup = new SessionSetupRequest(Common.KEY_EXCHANGE_DH, b("0.NA/20.500.12345"), 300, b("dh-public-key-bytes"));
    setup.majorProtocolVersion = 2; setup.minorProtocolVersion = 5;
    setup.expiration = 1700000000; setup.certify = true; setup.returnRequestDigest = true;
    System.out.println("== SESSION_SETUP request body+header: mode 4 (DH), timeout 86400, identity 300:0.NA/20.500.12345, public key \"dh-public-key-bytes\", version 2.5, CT|RD, expiration 1700000000");
    System.out.println(hex(setup.getEncodedMessageBody()));

    String[] keys = {"0123456789abcdef", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"};
    for (String k : keys) {
      byte[] key = new BigInteger("1" + k, 16).toByteArray();
      byte[] sessionKey = new byte[k.length() / 2];
      System.arraycopy(key, key.length - sessionKey.length, sessionKey, 0, sessionKey.length);
      ModifyValueRequest req = new ModifyValueRequest(b("20.500.12345/abc"),
          new HandleValue[] {new HandleValue(1, b("URL"), b("https://example.cn/x"), HandleValue.TTL_TYPE_RELATIVE, 86400, 1700000000, null, true, true, true, false)},
          null);
      req.majorProtocolVersion = 2; req.minorProtocolVersion = 5;
      req.expiration = 1700043200; req.sessionId = 1234567; req.requestId = 7654321;
      req.sessionCounter = 3;
      req.signMessage(sessionKey);
      System.out.println("== MODIFY_VALUE in session 1234567, request id 7654321, counter 3, version 2.5, expiration 1700043200, MAC'd with the " + sessionKey.length + "-byte key " + k + " (message after the envelope: header, body, credential)");
      System.out.println(hex(req.getEncodedMessage()));
    }

    // A fixed RSA key (not secret: a test vector), so the PKCS#1 v1.5 signature is fixed too.
    BigInteger p = BigInteger.probablePrime(512, new java.util.Random(42));
    BigInteger q = BigInteger.probablePrime(512, new java.util.Random(43));
    BigInteger n = p.multiply(q), e = BigInteger.valueOf(65537);
    BigInteger d = e.modInverse(p.subtract(BigInteger.ONE).multiply(q.subtract(BigInteger.ONE)));
    PrivateKey priv = KeyFactory.getInstance("RSA").generatePrivate(new RSAPrivateCrtKeySpec(n, e, d, p, q,
        d.mod(p.subtract(BigInteger.ONE)), d.mod(q.subtract(BigInteger.ONE)), q.modInverse(p)));
    ErrorResponse resp = new ErrorResponse(AbstractMessage.OC_RESOLUTION, AbstractMessage.RC_HANDLE_NOT_FOUND, b("Handle not found"));
    resp.majorProtocolVersion = 2; resp.minorProtocolVersion = 5; resp.requestId = 99; resp.expiration = 1700000000;
    resp.certify = true;
    Signature sig = Signature.getInstance("SHA1withRSA");
    sig.initSign(priv);
    resp.signMessage(sig);
    System.out.println("== RSA test key: modulus (hex)");
    System.out.println(n.toString(16));
    System.out.println("== RSA test key: private exponent (hex)");
    System.out.println(d.toString(16));
    System.out.println("== a certified HANDLE_NOT_FOUND answer, version 2.5, request id 99, expiration 1700000000, signed with the RSA test key (SHA1withRSA; message after the envelope)");
    System.out.println(hex(resp.getEncodedMessage()));
  }
}

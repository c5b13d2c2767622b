// Drives the IDIS ID-SDK 2.0.3 (../shared/clients/id-sdk-2.0.3) against a Handle server:
// site info, resolution (plain, filtered, certified), login with a key (LOGIN_ID_SYSTEM)
// and with a password (LOGIN), and every write the SDK offers on the logged-in TCP
// channel, certified and not. One line per check on stdout:
//
//     CHECK <tab> name <tab> OK|FAIL <tab> detail
//
// Usage: java SdkInterop key=value ...
// keys: host, port (TCP), udpport (UDP, see below), prefix, keyfile (the admin's private key
//       as a .bin or .pem file), keyindex, username, password, only
//
// Over UDP the SDK binds its own socket to the server's port number, so on one host it
// must be pointed at another port that the network namespace redirects to the server.

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import cn.ac.caict.iiiiot.id.client.core.BaseResponse;
import cn.ac.caict.iiiiot.id.client.core.ErrorResponse;
import cn.ac.caict.iiiiot.id.client.core.ResolutionResponse;
import cn.ac.caict.iiiiot.id.client.core.SiteResponse;
import cn.ac.caict.iiiiot.id.client.data.AdminInfo;
import cn.ac.caict.iiiiot.id.client.data.IdentifierValue;
import cn.ac.caict.iiiiot.id.client.data.MsgSettings;
import cn.ac.caict.iiiiot.id.client.service.IIDManageServiceChannel;
import cn.ac.caict.iiiiot.id.client.service.impl.ChannelManageServiceImpl;
import cn.ac.caict.iiiiot.id.client.utils.IdentifierValueUtil;

public class SdkInterop {
  static Map<String, String> opt = new HashMap<>();
  static int failures = 0;
  static String only = "";

  interface Body { String run() throws Exception; }

  static void run(String name, Body body) {
    if (!only.isEmpty()) {
      boolean wanted = false;
      for (String p : only.split(",")) if (name.startsWith(p)) wanted = true;
      if (!wanted) return;
    }
    String detail;
    boolean ok;
    try {
      detail = body.run();
      ok = true;
    } catch (Throwable t) {
      StringBuilder sb = new StringBuilder(String.valueOf(t));
      for (Throwable c = t.getCause(); c != null && c != c.getCause(); c = c.getCause()) sb.append(" <- ").append(c);
      detail = sb.toString();
      ok = false;
    }
    if (!ok) failures++;
    System.out.println("CHECK\t" + name + "\t" + (ok ? "OK" : "FAIL") + "\t"
        + String.valueOf(detail).replace('\n', ' ').replace('\t', ' '));
    System.out.flush();
  }

  static String describe(BaseResponse r) {
    if (r instanceof ErrorResponse) {
      return "rc " + r.responseCode + " " + new String(((ErrorResponse) r).message, StandardCharsets.UTF_8);
    }
    return "rc " + r.responseCode + " " + r.getClass().getSimpleName();
  }

  static BaseResponse expect(BaseResponse r, int rc) throws Exception {
    if (r == null) throw new Exception("no response");
    if (r.responseCode != rc) throw new Exception(describe(r) + " (wanted " + rc + ")");
    return r;
  }

  static String values(BaseResponse r) throws Exception {
    StringBuilder sb = new StringBuilder();
    for (IdentifierValue v : ((ResolutionResponse) r).getAllIDValues()) {
      String type = new String(v.getType(), StandardCharsets.UTF_8);
      String data = type.startsWith("HS_") ? v.getData().length + " bytes" : new String(v.getData(), StandardCharsets.UTF_8);
      sb.append(v.getIndex()).append(':').append(type).append('=').append(data).append(' ');
    }
    return sb.toString().trim();
  }

  static MsgSettings settings(boolean certify, boolean digest) {
    MsgSettings s = new MsgSettings();
    s.setCertify(certify);
    s.setReturnRequestDigest(digest);
    return s;
  }

  static IdentifierValue[] record(String url, String admin, int index) throws Exception {
    IdentifierValue adminValue = new IdentifierValue();
    IdentifierValueUtil.makeIdentifierValueOfAdminInfo(adminValue,
        new AdminInfo(admin, index, true, true, true, true, true, true, true, true, true, true, true, true), 100);
    return new IdentifierValue[] { new IdentifierValue(1, "URL", url), adminValue };
  }

  public static void main(String[] args) throws Exception {
    for (String a : args) {
      int eq = a.indexOf('=');
      if (eq > 0) opt.put(a.substring(0, eq), a.substring(eq + 1));
    }
    only = opt.getOrDefault("only", "");
    final String host = opt.get("host");
    final int port = Integer.parseInt(opt.get("port"));
    final String prefix = opt.get("prefix");
    final String admin = "0.NA/" + prefix;
    final int keyIndex = Integer.parseInt(opt.getOrDefault("keyindex", "300"));
    final String tag = Long.toString(System.currentTimeMillis() % 100000000L, 36);
    final ChannelManageServiceImpl channels = new ChannelManageServiceImpl();

    // A channel that has not logged in: reads work, writes are challenged and fail.
    final IIDManageServiceChannel anon = channels.generateChannel(host, port, "TCP");
    final String fixture = prefix + "/sdk-fixture-" + tag;

    final IIDManageServiceChannel tcp = channels.generateChannel(host, port, "TCP");
    run("tcp.login-key", () -> describe(expect(tcp.login(admin, keyIndex, opt.get("keyfile"), null, 1, settings(false, true)), 1)));
    for (int rd = 2; rd <= 3; rd++) {
      final int rdType = rd;
      run("tcp.login-key-digest-" + rd, () -> {
        IIDManageServiceChannel c = channels.generateChannel(host, port, "TCP");
        return describe(expect(c.login(admin, keyIndex, opt.get("keyfile"), null, rdType, settings(false, true)), 1));
      });
    }
    run("tcp.create", () -> describe(expect(tcp.createIdentifier(fixture,
        record("https://example.cn/" + tag, admin, keyIndex), settings(false, false)), 1)));
    run("tcp.siteinfo", () -> {
      BaseResponse r = expect(tcp.getServerSiteInfo(settings(false, false)), 1);
      byte[] key = ((SiteResponse) r).getSiteInfo().servers[0].publicKey;
      if (key == null || key.length == 0) throw new Exception("no server public key in the site info");
      return describe(r) + ", server key of " + key.length + " bytes";
    });
    run("tcp.resolve", () -> values(expect(anon.lookupIdentifier(fixture, null, null, settings(false, false)), 1)));
    run("tcp.resolve-type", () -> {
      String v = values(expect(anon.lookupIdentifier(fixture, null, new String[] {"URL"}, settings(false, false)), 1));
      if (!v.startsWith("1:URL=") || v.contains("HS_ADMIN")) throw new Exception("filter ignored: " + v);
      return v;
    });
    run("tcp.resolve-index", () -> {
      String v = values(expect(anon.lookupIdentifier(fixture, new int[] {100}, null, settings(false, false)), 1));
      if (!v.startsWith("100:HS_ADMIN")) throw new Exception("filter ignored: " + v);
      return v;
    });
    run("tcp.resolve-certified", () -> values(expect(anon.lookupIdentifier(fixture, null, null, settings(true, false)), 1)));
    run("tcp.resolve-certified-digest", () -> values(expect(anon.lookupIdentifier(fixture, null, null, settings(true, true)), 1)));
    run("tcp.resolve-not-found", () -> describe(expect(anon.lookupIdentifier(prefix + "/no-such-" + tag, null, null, settings(false, false)), 100)));
    run("tcp.write-without-login", () -> {
      BaseResponse r = anon.createIdentifier(prefix + "/sdk-anon-" + tag, record("https://example.cn/no", admin, keyIndex), settings(false, false));
      if (r.responseCode != 402) throw new Exception("an anonymous channel wrote: " + describe(r));
      BaseResponse gone = anon.lookupIdentifier(prefix + "/sdk-anon-" + tag, null, null, settings(false, false));
      expect(gone, 100);
      return "challenged (402), nothing written";
    });
    run("tcp.add", () -> describe(expect(tcp.addIdentifierValues(fixture,
        new IdentifierValue[] { new IdentifierValue(2, "EMAIL", "ops@example.cn") }, settings(false, false)), 1)));
    run("tcp.modify", () -> describe(expect(tcp.modifyIdentifierValues(fixture,
        new IdentifierValue[] { new IdentifierValue(2, "EMAIL", "qa@example.cn") }, settings(false, false)), 1)));
    run("tcp.modify-certified", () -> describe(expect(tcp.modifyIdentifierValues(fixture,
        new IdentifierValue[] { new IdentifierValue(2, "EMAIL", "cert@example.cn") }, settings(true, true)), 1)));
    run("tcp.read-back", () -> {
      String v = values(expect(anon.lookupIdentifier(fixture, null, null, settings(false, false)), 1));
      if (!v.contains("2:EMAIL=cert@example.cn")) throw new Exception("modify not visible: " + v);
      return v;
    });
    run("tcp.remove", () -> describe(expect(tcp.removeIdentifierValues(fixture, new int[] {2}, settings(false, false)), 1)));
    run("tcp.delete", () -> describe(expect(tcp.deleteIdentifier(fixture, settings(false, false)), 1)));
    run("tcp.gone", () -> describe(expect(anon.lookupIdentifier(fixture, null, null, settings(false, false)), 100)));

    if (opt.containsKey("password")) {
      final String pwPrefix = opt.get("pwprefix");
      run("tcp.password-login", () -> {
        IIDManageServiceChannel c = channels.generateChannel(host, port, "TCP");
        expect(c.login(opt.get("username"), opt.get("password"), settings(false, false)), 1);
        String h = pwPrefix + "/sdk-pw-" + tag;
        expect(c.createIdentifier(h, record("https://example.cn/pw", "0.NA/" + pwPrefix, 300), settings(false, false)), 1);
        expect(c.deleteIdentifier(h, settings(false, false)), 1);
        return "logged in with a password; created and deleted " + h;
      });
      run("tcp.password-login-wrong", () -> {
        IIDManageServiceChannel c = channels.generateChannel(host, port, "TCP");
        BaseResponse r = c.login(opt.get("username"), opt.get("password") + "-wrong", settings(false, false));
        if (r.responseCode == 1) throw new Exception("a wrong password logged in");
        BaseResponse w = c.createIdentifier(pwPrefix + "/sdk-pw-no-" + tag, record("https://example.cn/no", "0.NA/" + pwPrefix, 300), settings(false, false));
        if (w.responseCode == 1) throw new Exception("a refused login wrote");
        return describe(r) + "; then a write: " + describe(w);
      });
    }

    if (opt.containsKey("udpport")) {
      final int udpPort = Integer.parseInt(opt.get("udpport"));
      final IIDManageServiceChannel udp = channels.generateChannel(host, udpPort, "UDP");
      final String h = prefix + "/sdk-udp-" + tag;
      expect(tcp.createIdentifier(h, record("https://example.cn/udp", admin, keyIndex), settings(false, false)), 1);
      run("udp.resolve", () -> values(expect(udp.lookupIdentifier(h, null, null, settings(false, false)), 1)));
      run("udp.resolve-type", () -> values(expect(udp.lookupIdentifier(h, null, new String[] {"URL"}, settings(false, false)), 1)));
      run("udp.resolve-not-found", () -> describe(expect(udp.lookupIdentifier(prefix + "/no-such-udp-" + tag, null, null, settings(false, false)), 100)));
      run("udp.siteinfo", () -> describe(expect(udp.getServerSiteInfo(settings(false, false)), 1)));
      expect(tcp.deleteIdentifier(h, settings(false, false)), 1);
    }
    System.out.println("DONE\t" + failures + " failed");
    System.exit(0);
  }
}

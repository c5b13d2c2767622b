// Resolves one large handle (60 values, about 64 KB) with the IDIS ID-SDK 2.0.3 on a TCP
// channel and on a UDP channel. One line per check on stdout:
//
//     CHECK <tab> name <tab> OK|FAIL <tab> detail
//
// Usage: java SdkLargeHandle host=H port=P udpport=U handle=HANDLE
// The SDK keeps to the transport its channel was made with: a UDP answer over the node's
// datagram cap arrives as an RC 2 saying to ask over TCP (the detail shows what the SDK
// made of it), and the TCP channel resolves the handle whole.

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import cn.ac.caict.iiiiot.id.client.core.BaseResponse;
import cn.ac.caict.iiiiot.id.client.core.ErrorResponse;
import cn.ac.caict.iiiiot.id.client.core.ResolutionResponse;
import cn.ac.caict.iiiiot.id.client.data.MsgSettings;
import cn.ac.caict.iiiiot.id.client.service.IIDManageServiceChannel;
import cn.ac.caict.iiiiot.id.client.service.impl.ChannelManageServiceImpl;

public class SdkLargeHandle {
  interface Body { String run() throws Exception; }

  static void run(String name, Body body) {
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
    System.out.println("CHECK\t" + name + "\t" + (ok ? "OK" : "FAIL") + "\t"
        + String.valueOf(detail).replace('\n', ' ').replace('\t', ' '));
    System.out.flush();
  }

  static String describe(BaseResponse r) throws Exception {
    if (r == null) return "no response";
    if (r instanceof ErrorResponse) {
      return "rc " + r.responseCode + " " + new String(((ErrorResponse) r).message, StandardCharsets.UTF_8);
    }
    if (r instanceof ResolutionResponse) {
      return "rc " + r.responseCode + " " + ((ResolutionResponse) r).getAllIDValues().length + " values";
    }
    return "rc " + r.responseCode + " " + r.getClass().getSimpleName();
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> opt = new HashMap<>();
    for (String a : args) {
      int eq = a.indexOf('=');
      if (eq > 0) opt.put(a.substring(0, eq), a.substring(eq + 1));
    }
    final String host = opt.get("host");
    final String handle = opt.get("handle");
    final MsgSettings plain = new MsgSettings();
    final ChannelManageServiceImpl channels = new ChannelManageServiceImpl();
    final IIDManageServiceChannel tcp = channels.generateChannel(host, Integer.parseInt(opt.get("port")), "TCP");
    final IIDManageServiceChannel udp = channels.generateChannel(host, Integer.parseInt(opt.get("udpport")), "UDP");
    run("tcp.large", () -> describe(tcp.lookupIdentifier(handle, null, null, plain)));
    run("udp.large", () -> describe(udp.lookupIdentifier(handle, null, null, plain)));
    System.out.println("DONE");
    System.exit(0);
  }
}

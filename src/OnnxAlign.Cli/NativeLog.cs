using Microsoft.ML.OnnxRuntime;

namespace OnnxAlign.Cli;

/// <summary>
/// ONNX Runtime's own log in the CLI: by default ONNX Runtime writes its messages to stderr in its own format, so a
/// failure it logs (a CUDA provider whose libraries are missing) would come before the CLI's one "error:" line and
/// break the error policy. The CLI creates the runtime's environment with this logger instead: warnings are printed
/// as one line each (<c>onnxruntime: …</c>), errors are held and the last one is added to the CLI's error line
/// (it names what the exception does not, e.g. the library that failed to load). ONNXALIGN_ORT_LOG=1 prints errors
/// as they come too.
/// </summary>
internal static class NativeLog
{
    private static readonly object Gate = new();
    private static readonly DOrtLoggingFunction Callback = OnMessage; // kept alive for the native side
    private static readonly bool Verbose = Environment.GetEnvironmentVariable("ONNXALIGN_ORT_LOG") == "1";
    private static string? _lastError;

    /// <summary>Creates ONNX Runtime's environment with this logger (once, before any other use of ONNX Runtime).</summary>
    public static void Install()
    {
        if (OrtEnv.IsCreated) return;
        var options = new EnvironmentCreationOptions
        {
            logId = "onnxalign",
            logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING,
            loggingFunction = Callback,
        };
        OrtEnv.CreateInstanceWithOptions(ref options);
    }

    /// <summary>The last error ONNX Runtime logged, as <c> (onnxruntime: …)</c> for an error line, or empty.</summary>
    public static string Detail(string line)
    {
        string? last;
        lock (Gate) last = _lastError;
        return last is null || line.Contains(last, StringComparison.Ordinal) ? "" : $" (onnxruntime: {last})";
    }

    private static void OnMessage(IntPtr param, OrtLoggingLevel severity, string category, string logId, string codeLocation, string message)
    {
        string text = OneLine(message);
        if (severity >= OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR)
        {
            lock (Gate) _lastError = text;
            if (!Verbose) return;
        }
        try { Console.Error.WriteLine($"onnxruntime: {text}"); } catch (IOException) { }
    }

    /// <summary>The message without ONNX Runtime's source-location prefix, on one line.</summary>
    private static string OneLine(string message)
    {
        string s = message.ReplaceLineEndings(" ").Trim();
        int marker = s.IndexOf("] ", StringComparison.Ordinal);
        // "/path/provider_bridge_ort.cc:2043 onnxruntime::Provider& ...::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load ..."
        int fail = s.LastIndexOf(" : ", StringComparison.Ordinal);
        return marker >= 0 && fail > marker ? s[(fail + 3)..] : s;
    }
}

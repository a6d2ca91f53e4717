using System.Text;

namespace OnnxAlign.Cli;

/// <summary>
/// Standard output that a closed pipe, a closed descriptor or a full device (<c>&gt;&amp;-</c>, <c>&gt; /dev/full</c>)
/// cannot break, nor can standard error: what the CLI prints is information, the run's result is its files and exit
/// code. The first failure on standard output is said once on standard error when the command ends.
/// </summary>
internal sealed class StandardOutput(TextWriter inner) : TextWriter
{
    private Exception? _failure;

    public override Encoding Encoding => inner.Encoding;

    /// <summary>Installs it as <see cref="Console.Out"/>, and the same guard on <see cref="Console.Error"/> (whose failures have nowhere to be said).</summary>
    public static StandardOutput Install()
    {
        var output = new StandardOutput(Console.Out);
        Console.SetOut(output);
        Console.SetError(new StandardOutput(Console.Error));
        return output;
    }

    /// <summary>The first write that failed, or null.</summary>
    public Exception? Failure => _failure;

    private void Guard(Action write)
    {
        if (_failure is not null) return;
        try { write(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException) { _failure = e; }
    }

    public override void Write(char value) => Guard(() => inner.Write(value));

    public override void Write(string? value) => Guard(() => inner.Write(value));

    public override void WriteLine(string? value) => Guard(() => inner.WriteLine(value));

    public override void Flush() => Guard(inner.Flush);

    /// <summary>Flushes and, when a write failed, says so on standard error (one line).</summary>
    public void Finish()
    {
        Flush();
        if (_failure is { } e)
            Console.Error.WriteLine($"warning: standard output could not be written ({e.Message}); the run's files and exit code are its result");
    }
}

namespace OnnxAlign.IO;

/// <summary>Writes files all-or-nothing: to a temporary file in the same folder, then renamed over the target.
/// An interrupted run therefore leaves either the old file or the complete new one, never half of one.</summary>
public static class AtomicFile
{
    /// <summary>
    /// Held for the whole of each atomic write. A process that must stop (Ctrl-C) takes it first, so it stops between
    /// writes, never during one.
    /// </summary>
    public static object WriteGate { get; } = new();

    /// <summary>Writes what <paramref name="write"/> produces to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        lock (WriteGate) WriteUnderGate(path, write);
    }

    private static void WriteUnderGate(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>Writes text (UTF-8) atomically.</summary>
    public static void WriteText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });
}

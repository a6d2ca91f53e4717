using OnnxAlign.Core;

namespace OnnxAlign.IO;

/// <summary>
/// An exclusive hold on an output folder for the life of a run: <c>.lock</c> inside it is opened with
/// <see cref="FileShare.None"/>, an advisory lock the operating system drops when the process ends, however it ends —
/// so a second run on the same folder is refused while the first one lives, and a killed run's stale file blocks nothing.
/// The file is removed when the run ends normally.
/// </summary>
public sealed class OutputLock : IDisposable
{
    private readonly FileStream _stream;
    private readonly string _path;

    private OutputLock(FileStream stream, string path) => (_stream, _path) = (stream, path);

    /// <summary>The lock file's name inside the folder.</summary>
    public const string FileName = ".lock";

    /// <summary>Creates <paramref name="directory"/> if needed and takes its lock.</summary>
    /// <exception cref="ConfigException">Another live process holds the folder, or it cannot be created.</exception>
    public static OutputLock Acquire(string directory)
    {
        string path = Path.Combine(directory, FileName);
        try
        {
            Directory.CreateDirectory(directory);
            var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            stream.SetLength(0);
            using (var writer = new StreamWriter(stream, leaveOpen: true)) writer.Write($"{Environment.ProcessId}\n");
            stream.Flush();
            return new OutputLock(stream, path);
        }
        catch (IOException e) when (File.Exists(path))
        {
            string holder = "";
            try { holder = File.ReadAllText(path).Trim(); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw ConfigException.For("outputDirectory", $"{directory}: another run is writing this folder{(holder.Length > 0 ? $" (process {holder})" : "")}; wait for it or choose another folder ({e.Message})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ConfigException.For("outputDirectory", $"{directory}: output folder is not writable ({e.Message})");
        }
    }

    /// <summary>Releases the folder and removes the lock file (a run that is killed leaves it; it blocks nothing).</summary>
    public void Dispose()
    {
        try { File.Delete(_path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _stream.Dispose();
    }
}

using OnnxAlign.Core;

namespace OnnxAlign.IO;

/// <summary>Writes a set of samples into a run folder: <c>samples.npy</c> [N, ...], and for image-shaped samples one
/// PNG per sample (named by its index in the whole run, so shards never collide) plus <c>grid.png</c>.</summary>
public static class SampleSetWriter
{
    /// <summary>Largest number of samples shown in <c>grid.png</c>.</summary>
    public const int GridLimit = 256;

    /// <summary>
    /// Makes sure <paramref name="directory"/> exists and can be written, takes its lock (<see cref="OutputLock"/>: the
    /// caller holds it for the run and disposes it), and refuses to mix runs.
    /// </summary>
    /// <exception cref="ConfigException">Not writable, held by another live run, or holding another run's report without <paramref name="overwrite"/>.</exception>
    public static OutputLock PrepareDirectory(string directory, bool overwrite)
    {
        // A filesystem root is never a run's folder, --overwrite or not: the run's files would land among the system's.
        string full = Path.GetFullPath(directory);
        if (Path.GetPathRoot(full) == full)
            throw ConfigException.For("outputDirectory", $"{directory}: is a filesystem root; choose a folder for the run");
        var folderLock = OutputLock.Acquire(directory);
        try
        {
            Check(directory, overwrite);
            return folderLock;
        }
        catch
        {
            folderLock.Dispose();
            throw;
        }
    }

    private static void Check(string directory, bool overwrite)
    {
        try
        {
            string probe = Path.Combine(directory, $".write-test-{Guid.NewGuid():N}");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ConfigException.For("outputDirectory", $"{directory}: output folder is not writable ({e.Message})");
        }
        if (overwrite) return;
        if (File.Exists(Path.Combine(directory, "report.json")))
            throw ConfigException.For("outputDirectory", $"{directory}: already holds a run (report.json); pass {OnnxAlignException.Option("overwrite")} or choose another folder");
        // An interrupted run's folder (its checkpoint) is the run's own, files and all: the caller decides (resume).
        if (Directory.Exists(Path.Combine(directory, CheckpointFolder))) return;
        // Anything else is someone's files, which a run's own files of the same names would replace (samples.npy, W.npy …).
        var foreign = Directory.EnumerateFileSystemEntries(directory).Select(Path.GetFileName).Where(name => !IsRunOwn(name!)).Take(3).ToArray();
        if (foreign.Length > 0)
            throw ConfigException.For("outputDirectory", $"{directory}: holds files of its own ({string.Join(", ", foreign)}{(foreign.Length == 3 ? ", …" : "")}); " +
                                                         $"choose a new or empty folder, or pass {OnnxAlignException.Option("overwrite")} to write the run beside them");
    }

    /// <summary>The checkpoint folder of an interrupted run inside its output folder (<c>Sampling.BatchCheckpoint.Folder</c>).</summary>
    public const string CheckpointFolder = ".partial";

    /// <summary>What a run itself leaves in a folder that holds no finished run: its lock, a failed run's error.log, atomic writes' temporary files.</summary>
    private static bool IsRunOwn(string name) =>
        name is OutputLock.FileName or "error.log" || name.StartsWith(".write-test-", StringComparison.Ordinal) ||
        (name.StartsWith('.') && name.EndsWith(".tmp", StringComparison.Ordinal));

    /// <summary>
    /// Before a run writes its files into a folder that may hold an earlier run (--overwrite): the old
    /// <c>report.json</c> goes first, so that a report never describes files that are not the ones beside it.
    /// </summary>
    public static void BeginReplacing(string directory)
    {
        string report = Path.Combine(directory, "report.json");
        if (File.Exists(report)) File.Delete(report);
    }

    /// <summary>
    /// After a run wrote <paramref name="keep"/>: removes the files an earlier run left that this one did not write
    /// (samples and images of a larger run, base sets, grids), so that the folder holds exactly this run. Only files
    /// of the names runs write are touched.
    /// </summary>
    public static void RemoveStale(string directory, IEnumerable<string> keep)
    {
        var kept = new HashSet<string>(keep, StringComparer.Ordinal);
        string[] patterns = ["samples.npy", "base.npy", "theta.npy", "latents.npy", "base_latents.npy", "sample_*.png", "base_*.png", "grid.png", "base_grid.png", "error.log"];
        foreach (string pattern in patterns)
            foreach (string path in Directory.GetFiles(directory, pattern))
                if (!kept.Contains(Path.GetFileName(path))) File.Delete(path);
    }

    /// <summary>Writes the files; returns their names relative to <paramref name="directory"/>. Images are named by run
    /// index: <paramref name="firstIndex"/> + i, or <paramref name="indices"/>[i] when samples were skipped.</summary>
    public static IReadOnlyList<string> Write(string directory, ReadOnlySpan<float> samples, int count, int firstIndex, IReadOnlyList<int> sampleShape,
                                              string stem = "samples", IReadOnlyList<int>? indices = null)
    {
        var written = new List<string>();
        NpyFile.Write(Path.Combine(directory, $"{stem}.npy"), samples, [count, .. sampleShape]);
        written.Add($"{stem}.npy");
        if (!ImageFiles.IsImage(sampleShape)) return written;
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        string prefix = stem == "samples" ? "sample" : stem;
        for (int i = 0; i < count; i++)
        {
            string name = $"{prefix}_{(indices is null ? firstIndex + i : indices[i]):D6}.png";
            ImageFiles.WritePng(Path.Combine(directory, name), samples.Slice(i * size, size), sampleShape);
            written.Add(name);
        }
        if (count == 0) return written;   // every sample was skipped: nothing to show
        string grid = stem == "samples" ? "grid.png" : $"{stem}_grid.png";
        ImageFiles.WriteGrid(Path.Combine(directory, grid), samples, Math.Min(count, GridLimit), sampleShape);
        written.Add(grid);
        return written;
    }
}

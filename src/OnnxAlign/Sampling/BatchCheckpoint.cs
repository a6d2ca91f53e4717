using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxAlign.Core;
using OnnxAlign.IO;

namespace OnnxAlign.Sampling;

/// <summary>
/// Finished batches of a run kept in <c>OUT/.partial/</c> so that an interrupted run can continue (<c>--resume</c>,
/// issue #9). Each batch is written atomically as soon as it is done; <c>run.json</c> holds a fingerprint of everything
/// that determines the samples, and a resume with a different fingerprint is refused. Because sample i always uses
/// noise stream (seed, i), the resumed run's samples equal those of an uninterrupted run.
/// </summary>
public sealed class BatchCheckpoint : IBatchStore
{
    /// <summary>The checkpoint folder's name inside the output folder.</summary>
    public const string Folder = SampleSetWriter.CheckpointFolder;
    private readonly string _directory;

    // Typed notes: snake_case, enums by name, and doubles and floats that round-trip exactly, NaN and ±∞ included
    // (a report would write null).
    private static readonly JsonSerializerOptions NoteJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };

    private BatchCheckpoint(string directory) => _directory = directory;

    /// <summary>The checkpoint folder of an output folder.</summary>
    public static string PathOf(string outputDirectory) => Path.Combine(outputDirectory, Folder);

    /// <summary>True when <paramref name="outputDirectory"/> holds an interrupted run.</summary>
    public static bool Exists(string outputDirectory) => File.Exists(Path.Combine(PathOf(outputDirectory), "run.json"));

    /// <summary>True when the checkpoint holds finished work (a batch, an SMC system, a note): anything beside its run.json.</summary>
    public bool HoldsWork => Directory.Exists(_directory) && Directory.EnumerateFileSystemEntries(_directory).Any(path => Path.GetFileName(path) != "run.json");

    /// <summary>Starts a new checkpoint (replacing any old one) for a run with this fingerprint.</summary>
    public static BatchCheckpoint Start(string outputDirectory, string fingerprint)
    {
        string dir = PathOf(outputDirectory);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(dir);
        AtomicFile.WriteText(Path.Combine(dir, "run.json"), fingerprint);
        return new BatchCheckpoint(dir);
    }

    /// <summary>Refuses a resume where there is nothing to resume, before anything is written.</summary>
    /// <exception cref="ConfigException">No interrupted run in <paramref name="outputDirectory"/> (parameter <c>resume</c>).</exception>
    public static void CheckResumable(string outputDirectory)
    {
        if (!Exists(outputDirectory)) throw ConfigException.For("resume", $": {outputDirectory} holds no interrupted run ({Folder}/run.json)");
    }

    /// <summary>Opens the checkpoint of an interrupted run; its fingerprint must equal this run's.</summary>
    /// <exception cref="ConfigException">No interrupted run there, or one with other settings.</exception>
    public static BatchCheckpoint Resume(string outputDirectory, string fingerprint)
    {
        CheckResumable(outputDirectory);
        string dir = PathOf(outputDirectory);
        string path = Path.Combine(dir, "run.json");
        if (File.ReadAllText(path) != fingerprint)
            throw ConfigException.For("resume", $": the interrupted run in {outputDirectory} had other settings (see {Folder}/run.json); rerun it with the same options, or start over with {OnnxAlignException.Option("overwrite")}");
        // A kill during an atomic write leaves its hidden temporary file behind; it never became a result.
        foreach (var stray in Directory.GetFiles(outputDirectory, ".*.tmp").Concat(Directory.GetFiles(dir, ".*.tmp"))) File.Delete(stray);
        return new BatchCheckpoint(dir);
    }

    /// <summary>Batches already saved.</summary>
    public int SavedBatches => Directory.GetFiles(_directory, "batch_*.npy").Length;

    /// <inheritdoc/>
    public bool TryLoad(int firstIndex, Span<float> destination)
    {
        string path = BatchPath(firstIndex);
        if (Directory.Exists(path))
            throw ConfigException.For("GenerationRequest.Checkpoint", $": {path} is a folder where a saved batch belongs: the checkpoint is damaged; start over with {OnnxAlignException.Option("overwrite")}");
        if (!File.Exists(path)) return false;
        var array = NpyFile.Read(path);
        if (array.Data.Length != destination.Length) return false; // a batch of another size: recompute it
        array.Data.CopyTo(destination);
        return true;
    }

    /// <inheritdoc/>
    public void Save(int firstIndex, ReadOnlySpan<float> batch, IReadOnlyList<int> shape) => NpyFile.Write(BatchPath(firstIndex), batch, shape);

    /// <summary>A note saved beside the batches (e.g. the KL mixture's set-up), or null when there is none.</summary>
    public string? ReadNote(string name)
    {
        string path = Path.Combine(_directory, name);
        return File.Exists(path) ? File.ReadAllText(path) : null;
    }

    /// <summary>Saves a note beside the batches, atomically.</summary>
    public void WriteNote(string name, string text) => AtomicFile.WriteText(Path.Combine(_directory, name), text);

    /// <summary>A typed note (a record saved by <see cref="WriteNote{T}(string, T)"/>), or null when there is none.</summary>
    /// <exception cref="ConfigException">The note cannot be read as <typeparamref name="T"/> (parameter <c>checkpoint</c>).</exception>
    public T? ReadNote<T>(string name) where T : class
    {
        if (ReadNote(name) is not { } text) return null;
        try
        {
            return JsonSerializer.Deserialize<T>(text, NoteJson) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw ConfigException.For("checkpoint", $": its {name} is not what this run keeps there ({e.Message}); start the run over");
        }
    }

    /// <summary>Saves a record as a typed note, atomically (numbers exactly, NaN and ±∞ included).</summary>
    public void WriteNote<T>(string name, T value) => WriteNote(name, JsonSerializer.Serialize(value, NoteJson));

    /// <summary>
    /// A result a run computes once (a dual's solution, a sweep's point): read back when the checkpoint already has it,
    /// else computed and saved at once, so that an interruption after it never redoes it.
    /// </summary>
    /// <param name="name">The note's file name (e.g. <c>dual.json</c>).</param>
    /// <param name="compute">Computes the result (a record that serialises to JSON and back).</param>
    /// <param name="recalled">True when the result came from the checkpoint.</param>
    /// <exception cref="ConfigException">A saved note cannot be read as <typeparamref name="T"/> (parameter <c>checkpoint</c>).</exception>
    public T Remember<T>(string name, Func<T> compute, out bool recalled) where T : class
    {
        ArgumentNullException.ThrowIfNull(compute);
        if (ReadNote<T>(name) is { } saved)
        {
            recalled = true;
            return saved;
        }
        var value = compute();
        WriteNote(name, value);
        recalled = false;
        return value;
    }

    /// <summary>Removes the checkpoint once the run's files are written.</summary>
    public void Complete() => Directory.Delete(_directory, recursive: true);

    private string BatchPath(int firstIndex) => Path.Combine(_directory, $"batch_{firstIndex:D9}.npy");
}

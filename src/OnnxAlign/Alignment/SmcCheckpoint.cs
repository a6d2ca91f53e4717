using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>Finished SMC systems in the run's checkpoint: the particles as a batch keyed by system, the weights as a note.</summary>
internal sealed class SmcCheckpoint(BatchCheckpoint checkpoint) : ISmcSystemStore
{
    /// <inheritdoc/>
    public SmcSystem? TryLoad(int system, int particles, int sampleSize)
    {
        if (checkpoint.ReadNote(NoteName(system)) is not { } text) return null;
        var samples = new float[particles * sampleSize];
        if (!checkpoint.TryLoad(system, samples)) return null;
        try
        {
            var saved = SmcSystem.FromJson(JsonNode.Parse(text)!.AsObject(), samples);
            return saved is { } found && found.LogWeights.Length == particles ? found : null;
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException or FormatException)
        {
            throw ConfigException.For("resume", $": {Path.Combine(BatchCheckpoint.Folder, NoteName(system))} in the output folder is damaged ({e.Message}); start over with {OnnxAlignException.Option("overwrite")}", e);
        }
    }

    /// <inheritdoc/>
    public void Save(int system, SmcSystem finished)
    {
        // The particles first: a note without its batch is never read as a finished system.
        checkpoint.Save(system, finished.Samples, [finished.LogWeights.Length, finished.Samples.Length / finished.LogWeights.Length]);
        // A particle of weight 0 (dropped as NaN/±∞) is written with a null log weight.
        var note = finished.ToJson();
        checkpoint.WriteNote(NoteName(system), note.ToJsonString() + "\n");
    }

    private static string NoteName(int system) => $"smc_system_{system:D6}.json";
}

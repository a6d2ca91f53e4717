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
            var note = JsonNode.Parse(text)!.AsObject();
            var weights = note["log_weights"]!.AsArray().Select(v => v is null ? double.NegativeInfinity : v.GetValue<double>()).ToArray();
            if (weights.Length != particles) return null;
            return new SmcSystem(samples, weights, note["log_normalizer"]!.GetValue<double>(), note["resamplings"]!.GetValue<int>(),
                                 note["network_evaluations"]!.GetValue<long>(), note["non_finite"]!.GetValue<int>());
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
        var note = new JsonObject
        {
            // A particle of weight 0 (dropped as NaN/±∞) is written as null.
            ["log_weights"] = new JsonArray(finished.LogWeights.Select(w => double.IsFinite(w) ? JsonValue.Create(w) : null).ToArray<JsonNode?>()),
            ["log_normalizer"] = finished.LogNormalizer,
            ["resamplings"] = finished.Resamplings,
            ["network_evaluations"] = finished.NetworkEvaluations,
            ["non_finite"] = finished.NonFinite,
        };
        checkpoint.WriteNote(NoteName(system), note.ToJsonString() + "\n");
    }

    private static string NoteName(int system) => $"smc_system_{system:D6}.json";
}

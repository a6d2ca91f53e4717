using System.Text.Json.Nodes;
using OnnxAlign.Model;

namespace OnnxAlign.Jobs;

/// <summary>
/// Everything that determines a run's samples (DESIGN §6, §10): the command, the model (its folder and the identity of
/// its network file) and the settings by name. Its canonical JSON — keys sorted, values in invariant form — is the
/// resume fingerprint: the order in which options were given, and whether a default was spelled out, do not change it.
/// Settings that do not change the samples (the output folder, thread counts, overwrite/resume) stay out of it.
/// </summary>
public sealed record RunPlan
{
    /// <summary>The command or entry point (<c>generate</c>).</summary>
    public required string Command { get; init; }

    /// <summary>The model's folder, as a full path.</summary>
    public required string Model { get; init; }

    /// <summary>The network file's size and last write time (UTC ticks): a changed model is a different run.</summary>
    public required string NetworkIdentity { get; init; }

    /// <summary>The settings by name, each in invariant text (null: not given and no default).</summary>
    public required IReadOnlyDictionary<string, string?> Settings { get; init; }

    /// <summary>The plan of <paramref name="command"/> on <paramref name="model"/> with these settings.</summary>
    public static RunPlan For(string command, DiffusionModel model, IReadOnlyDictionary<string, string?> settings)
    {
        var network = new FileInfo(model.OnnxPath);
        return new RunPlan
        {
            Command = command,
            Model = Path.GetFullPath(model.Directory),
            NetworkIdentity = $"{network.Length} bytes, {network.LastWriteTimeUtc.Ticks}",
            Settings = settings,
        };
    }

    /// <summary>The canonical JSON (sorted keys, one line, a final newline): equal plans give equal text.</summary>
    public string ToCanonicalJson()
    {
        return new JsonObject
        {
            ["command"] = Command,
            ["model"] = Model,
            ["network"] = NetworkIdentity,
            ["settings"] = SortedSettings(Settings),
        }.ToJsonString() + "\n";
    }

    /// <summary>Settings as a JSON object in ordinal key order: the one canonical form of the run plan and the plan file.</summary>
    internal static JsonObject SortedSettings(IReadOnlyDictionary<string, string?> settings)
    {
        var sorted = new JsonObject();
        foreach (var (name, value) in settings.OrderBy(p => p.Key, StringComparer.Ordinal)) sorted[name] = value;
        return sorted;
    }
}

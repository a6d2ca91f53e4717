using System.Globalization;
using OnnxAlign.Core;
using OnnxAlign.Sampling;

namespace OnnxAlign.Jobs;

/// <summary>
/// The shard of this process in an array job of an existing scheduler (DESIGN §10): Slurm job arrays
/// (<c>SLURM_ARRAY_TASK_ID</c>, <c>SLURM_ARRAY_TASK_COUNT</c>, <c>SLURM_ARRAY_TASK_MIN</c>) or Kubernetes Indexed Jobs
/// (<c>JOB_COMPLETION_INDEX</c>, with the count given by the caller or by <c>ONNXALIGN_SHARDS</c>, since a pod is not
/// told its job's completions).
/// </summary>
public static class ArrayJob
{
    /// <summary>The variable that gives an Indexed Job's shard count when the command line does not.</summary>
    public const string ShardCountVariable = "ONNXALIGN_SHARDS";

    /// <summary>The shard from the scheduler's environment, and where it came from.</summary>
    /// <param name="variable">Reads an environment variable (null: not set).</param>
    /// <param name="count">The shard count when the scheduler does not give it (Kubernetes; option <c>shardCount</c> in messages); null reads <see cref="ShardCountVariable"/>.</param>
    /// <exception cref="ConfigException">Neither scheduler's variables are set, or they are not valid (parameter <c>shard</c>).</exception>
    public static (Shard Shard, string Source) FromEnvironment(Func<string, string?> variable, int? count = null)
    {
        if (variable("SLURM_ARRAY_TASK_ID") is { } slurmId)
        {
            int id = Number(slurmId, "SLURM_ARRAY_TASK_ID");
            int tasks = variable("SLURM_ARRAY_TASK_COUNT") is { } n ? Number(n, "SLURM_ARRAY_TASK_COUNT")
                : count ?? throw ConfigException.For("shard", $"auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm < 20.11?); give the count with {OnnxAlignException.Option("shardCount")}");
            // An array --array=1-4 numbers its tasks from 1: the shard index counts from the array's first task.
            int first = variable("SLURM_ARRAY_TASK_MIN") is { } min ? Number(min, "SLURM_ARRAY_TASK_MIN") : 0;
            if (count is { } given && given != tasks)
                throw ConfigException.For("shard", $"auto: {OnnxAlignException.Option("shardCount")} is {given} but the Slurm array has {tasks} tasks");
            if (variable("SLURM_ARRAY_TASK_MAX") is { } max && Number(max, "SLURM_ARRAY_TASK_MAX") - first + 1 != tasks)
                throw ConfigException.For("shard", $"auto: the Slurm array {first}-{max} is not contiguous ({tasks} tasks); submit the array as {first}-{first + tasks - 1}, without a step");
            return (Checked(id - first, tasks, $"SLURM_ARRAY_TASK_ID={id}"), "slurm");
        }
        if (variable("JOB_COMPLETION_INDEX") is { } podIndex)
        {
            int index = Number(podIndex, "JOB_COMPLETION_INDEX");
            int shards = count ?? (variable(ShardCountVariable) is { } n ? Number(n, ShardCountVariable)
                : throw ConfigException.For("shard", $"auto: JOB_COMPLETION_INDEX is set but the shard count is not: give {OnnxAlignException.Option("shardCount")} (the Job's completions) or set {ShardCountVariable}"));
            return (Checked(index, shards, $"JOB_COMPLETION_INDEX={index}"), "kubernetes");
        }
        throw ConfigException.For("shard", "auto: not in an array job (neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set); give the shard as i/n");
    }

    private static Shard Checked(int index, int count, string what)
    {
        if (count < 1 || index < 0 || index >= count)
            throw ConfigException.For("shard", $"auto: {what} is not a shard of {count} (expected 0 ≤ index < {count})");
        return new Shard(index, count);
    }

    private static int Number(string text, string name) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) ? value
            : throw ConfigException.For("shard", $"auto: {name}='{text}' is not a non-negative integer");
}

using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Sampling;

namespace OnnxAlign.Jobs;

/// <summary>How <see cref="OutputJob.Open"/> treats what the folder already holds.</summary>
public sealed record OutputJobSettings
{
    /// <summary>Replace a previous run (its report and files) in the folder.</summary>
    public bool Overwrite { get; init; }

    /// <summary>Continue the interrupted run the folder holds (same run plan); its finished work is kept.</summary>
    public bool Resume { get; init; }
}

/// <summary>What a run leaves in its folder: its report and the writer of its files (which returns their names).</summary>
/// <param name="Report">The report (its <see cref="JobReport.Files"/> are set from what <paramref name="WriteFiles"/> returns).</param>
/// <param name="WriteFiles">Writes the run's files into the folder and returns their names relative to it.</param>
public sealed record JobOutput(JobReport Report, Func<IReadOnlyList<string>> WriteFiles);

/// <summary>
/// The one lifecycle of a run that writes an output folder (DESIGN §6, the Jobs layer): <see cref="Open"/> takes the
/// folder's lock, applies the overwrite policy, refuses a folder that holds an interrupted run unless told to resume or
/// overwrite it, and starts or resumes the checkpoint keyed by the run plan's canonical JSON (so the order of the
/// options never matters); the work reads and writes <see cref="Checkpoint"/>; <see cref="Finish"/> writes the files
/// (replacing an earlier run's stale ones), report.json atomically, and completes the checkpoint; <see cref="Run{T}"/>
/// turns a NaN/±∞ sample into the finished work and a <c>stopped</c> report, then lets the exception go on.
/// </summary>
/// <remarks>
/// The job owns the folder's <see cref="OutputLock"/> and its checkpoint: disposing it releases the lock (the checkpoint
/// stays on disk unless the run finished, so that an interrupted run can be resumed). One job per folder and process.
/// </remarks>
public sealed class OutputJob : IDisposable
{
    /// <summary>Notes round-trip exactly: NaN and ±∞ stay themselves (a report would write null).</summary>
    private static readonly JsonSerializerOptions NoteOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly OutputLock _lock;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private bool _created;
    private bool _discard;

    private OutputJob(string directory, OutputLock folderLock, BatchCheckpoint? checkpoint, bool resumed, string? planHash) =>
        (Directory, _lock, Checkpoint, Resumed, PlanHash) = (directory, folderLock, checkpoint, resumed, planHash);

    /// <summary>The output folder.</summary>
    public string Directory { get; }

    /// <summary>The run's checkpoint (finished batches, SMC systems, notes); null for a run without a run plan.</summary>
    public BatchCheckpoint? Checkpoint { get; }

    /// <summary>True when the job continues an interrupted run.</summary>
    public bool Resumed { get; }

    /// <summary>The short hash of the run plan's canonical JSON (a run id for runs without a plan file); null without a plan.</summary>
    public string? PlanHash { get; }

    /// <summary>
    /// Opens <paramref name="directory"/> for a run. Call it once every input is checked: it is the first thing that
    /// writes (bad input writes nothing). With a <paramref name="plan"/> the run is checkpointed and resumable.
    /// </summary>
    /// <param name="directory">The output folder (created if needed).</param>
    /// <param name="settings">Overwrite and resume.</param>
    /// <param name="plan">Everything that determines the run's results; null for a run that keeps no checkpoint.</param>
    /// <exception cref="ConfigException">
    /// The folder is not writable, another live run holds it, or it holds a finished run without overwrite (parameter
    /// <c>outputDirectory</c>); it holds an interrupted run and neither resume nor overwrite was asked for; resume was
    /// asked for and it holds none, or one with other settings (parameter <c>resume</c>).
    /// </exception>
    public static OutputJob Open(string directory, OutputJobSettings settings, RunPlan? plan = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Resume && plan is null) throw new ArgumentException("a run without a run plan keeps no checkpoint to resume", nameof(settings));
        if (settings.Resume && settings.Overwrite)
            throw ConfigException.For("resume", $"and {OnnxAlignException.Option("overwrite")}: give one (continue the interrupted run, or start over)");
        // Before the folder is created: a resume of nothing is bad input, and bad input writes nothing.
        if (settings.Resume) BatchCheckpoint.CheckResumable(directory);
        bool created = !System.IO.Directory.Exists(directory);
        // The lock first: a live run's checkpoint is not "an interrupted run", and two runs never mix files.
        var folderLock = SampleSetWriter.PrepareDirectory(directory, settings.Overwrite);
        try
        {
            if (!settings.Resume && !settings.Overwrite && BatchCheckpoint.Exists(directory))
                throw ConfigException.For("outputDirectory", $"{directory}: holds an interrupted run; pass {OnnxAlignException.Option("resume")} to continue it or {OnnxAlignException.Option("overwrite")} to start over");
            BatchCheckpoint? checkpoint = null;
            string? hash = null;
            if (plan is not null)
            {
                string fingerprint = plan.ToCanonicalJson();
                hash = PlanFile.ShortHash(fingerprint);
                checkpoint = settings.Resume ? BatchCheckpoint.Resume(directory, fingerprint) : BatchCheckpoint.Start(directory, fingerprint);
            }
            else if (BatchCheckpoint.Exists(directory))
                System.IO.Directory.Delete(BatchCheckpoint.PathOf(directory), recursive: true);   // overwritten: an old run's work is not this run's
            // An earlier report goes first, so that a report never describes files that are not the ones beside it.
            SampleSetWriter.BeginReplacing(directory);
            return new OutputJob(directory, folderLock, checkpoint, settings.Resume, hash) { _created = created };
        }
        catch
        {
            folderLock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs the work; when a sample turns NaN/±∞ (under a stop policy) writes what <paramref name="stopped"/> gives — the
    /// finished work — with a <c>stopped</c> report that says where, keeps the checkpoint, and rethrows.
    /// </summary>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞; the folder holds the finished work and the stopped report.</exception>
    public T Run<T>(Func<T> work, Func<NonFiniteException, JobOutput> stopped)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentNullException.ThrowIfNull(stopped);
        try { return work(); }
        catch (ConfigException) when (_created && Checkpoint?.HoldsWork != true)
        {
            // Bad input found only by running (a target no sampler can reach) before any work was saved: as with any
            // bad input, the folder this run created goes when the job is disposed, so that the same command with a
            // corrected value starts afresh. Finished work is never discarded (it stays for --resume).
            _discard = true;
            throw;
        }
        catch (NonFiniteException fault)
        {
            var output = stopped(fault);
            Write(output with { Report = output.Report with { Status = JobStatus.Stopped, Error = new JobError("non-finite", fault.Step, fault.SampleIndex) } });
            throw;
        }
    }

    /// <summary>
    /// Finishes the run: writes its files (removing those an earlier run left that this one did not write), report.json
    /// with them (atomically), and completes the checkpoint. Returns the report as written.
    /// </summary>
    public JsonObject Finish(JobOutput output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var written = Write(output);
        Checkpoint?.Complete();
        return written;
    }

    /// <summary>Writes report.json again (a figure computed after the files, e.g. a log Z estimate); the files are those the report lists.</summary>
    public JsonObject WriteReport(JobReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var json = WithTotal(report).ToJson();
        ReportJson.WriteFile(Path.Combine(Directory, "report.json"), json);
        return json;
    }

    private JsonObject Write(JobOutput output)
    {
        var files = output.WriteFiles();
        SampleSetWriter.RemoveStale(Directory, files);
        return WriteReport(output.Report with { Files = files });
    }

    /// <summary>The report with <c>time_seconds.total</c> from the job's clock where the command gave none.</summary>
    private JobReport WithTotal(JobReport report)
    {
        if (report.TimeSeconds?.ContainsKey("total") == true) return report;
        var times = new Dictionary<string, double>(report.TimeSeconds ?? new Dictionary<string, double>()) { ["total"] = Math.Round(_clock.Elapsed.TotalSeconds, 6) };
        return report with { TimeSeconds = times };
    }

    /// <summary>Releases the folder's lock; the checkpoint stays unless the run finished (or was refused as bad input in a folder it created: then the folder goes).</summary>
    public void Dispose()
    {
        _lock.Dispose();
        if (!_discard) return;
        try { System.IO.Directory.Delete(Directory, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}

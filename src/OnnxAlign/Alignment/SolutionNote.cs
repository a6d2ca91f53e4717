using OnnxAlign.Core;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>
/// The checkpoint note that keeps a dual's (or a fit's) solution, so that a resumed alignment samples its tilt without
/// solving again (DESIGN §10): written once the solution is found, read back on a resumed run. Doubles and floats
/// round-trip exactly, NaN and ±∞ included (a report would write null).
/// </summary>
internal static class SolutionNote
{
    /// <summary>The note's file name in the checkpoint.</summary>
    public const string Name = "dual.json";

    /// <summary>The saved solution, or null when the checkpoint holds none.</summary>
    /// <exception cref="ConfigException">The note cannot be read as <typeparamref name="T"/> (parameter <c>checkpoint</c>).</exception>
    public static T? Read<T>(BatchCheckpoint? checkpoint) where T : class => checkpoint?.ReadNote<T>(Name);

    /// <summary>Saves the solution (nothing without a checkpoint).</summary>
    public static void Write<T>(BatchCheckpoint? checkpoint, T solution) => checkpoint?.WriteNote(Name, solution);

    /// <summary>Refuses a saved solution whose sizes are not this problem's.</summary>
    /// <exception cref="ConfigException">The sizes differ (parameter <c>checkpoint</c>).</exception>
    public static void CheckSizes(bool matches)
    {
        if (!matches) throw ConfigException.For("checkpoint", $": its {Name} is the solution of another problem (other sizes); start the run over");
    }
}

/// <summary>What <see cref="ConstrainedResult"/> is rebuilt from (the constraints are the caller's).</summary>
internal sealed record ConstrainedNote(DualMethod Method, double[] Mu, float[] Theta, double[] Thresholds, double[] BaseMeans, double[] BaseStds,
                                       List<DualIterate> Trace, bool Converged, string? Infeasible, DualIterate Check, long NetworkEvaluations);

/// <summary>One <see cref="AveragingIterate"/> with its u (which the report leaves out).</summary>
internal sealed record AveragingNoteIterate(int Iteration, double[] U, double[] Moments, double Objective, double KlDivergence, double ThetaChange);

/// <summary>What <see cref="DistributionalResult"/> is rebuilt from.</summary>
internal sealed record DistributionalNote(double[] U, float[] Theta, List<AveragingNoteIterate> Trace, bool Converged, long NetworkEvaluations);

/// <summary>What a preference fit is rebuilt from.</summary>
internal sealed record PreferenceNote(PreferenceFit Fit, PreferenceReport Report);
